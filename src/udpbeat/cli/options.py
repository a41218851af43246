"""Option types for the commands: numbers that say what they are when they are wrong.

click's ``IntRange`` answers ``--count abc`` with "'abc' is not a valid integer range", and its
``FloatRange`` lets ``inf`` and ``nan`` through to fail later with a reason that does not fit.
These types name what was expected ("an integer", "a finite number of seconds") and check
finiteness before the range, so every bad value is one line that names its flag.
"""

from __future__ import annotations

import math
from typing import Any

import click


class Integer(click.IntRange):
    """An integer in a range; ``abc`` is "not a valid integer"."""

    name = "integer"


class Number(click.FloatRange):
    """A finite number in a range: ``inf`` and ``nan`` are refused as such, before the range."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                self.fail(f"{value!r} is not a valid {self.name}.", param, ctx)
        else:
            number = value
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite {self.name}.", param, ctx)
        return super().convert(number, param, ctx)


class Seconds(Number):
    """A finite number of seconds in a range."""

    name = "number of seconds"
