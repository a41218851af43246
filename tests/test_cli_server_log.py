"""The server's log: records in the order they happened, nothing lost without a word."""

from __future__ import annotations

import io
import json
import threading

from udpbeat.cli.output import LineWriter
from udpbeat.cli.server import MALFORMED_LOG_PER_SECOND, RecordPrinter
from udpbeat.reflector import Reflected

SOURCE = ("127.0.0.1", 40000)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _printer(as_json: bool = True) -> tuple[RecordPrinter, list[str], list[str], Clock]:
    out: list[str] = []
    err: list[str] = []
    clock = Clock()
    printer = RecordPrinter(
        as_json=as_json, quiet=False, out=out.append, err=err.append, clock=clock
    )
    return printer, out, err, clock


def _replied(seq: int) -> Reflected:
    return Reflected(1.7e9, SOURCE, "replied", f"Seq: {seq}, Time Difference: 0.000100 seconds")


def _malformed(n: int) -> Reflected:
    return Reflected(1.7e9, SOURCE, "malformed", f"bad-keyword: number {n}")


def test_json_records_come_out_in_the_order_they_happened() -> None:
    printer, out, _, _ = _printer()
    records = [_replied(1), _malformed(1), _replied(2), _malformed(2), _replied(3)]
    printer(records)
    kinds = [json.loads(line)["type"] for line in out]
    assert kinds == ["replied", "malformed", "replied", "malformed", "replied"]


def test_refused_records_past_the_limit_are_counted_and_the_count_is_said() -> None:
    printer, out, err, clock = _printer(as_json=False)
    printer([_malformed(n) for n in range(MALFORMED_LOG_PER_SECOND + 7)])
    assert len(err) == MALFORMED_LOG_PER_SECOND
    clock.now += 1.5
    printer([])  # the window ends: what it did not show is said
    assert err[-1] == "udpbeat: 7 more malformed or refused datagrams not shown"
    printer([_malformed(n) for n in range(MALFORMED_LOG_PER_SECOND + 2)])
    printer.finish()  # at exit, the last window is said too
    assert err[-1] == "udpbeat: 2 more malformed or refused datagrams not shown"
    assert out == []


def test_records_the_reflector_could_not_keep_are_said() -> None:
    printer, _, err, _ = _printer()
    printer([_replied(1), Reflected(1.7e9, ("-", 0), "not-logged", "40"), _replied(2)])
    assert [line for line in err if "not logged" in line] == [
        "udpbeat: 40 records not logged (the log backlog was full; the counters have them all)"
    ]


def test_the_server_hands_over_the_count_of_records_it_could_not_keep() -> None:
    import asyncio

    from udpbeat import ReflectorConfig, Server
    from udpbeat.reflector import LOG_BACKLOG
    from udpbeat.wire import text

    handed: list[Reflected] = []

    async def run() -> None:
        server = Server("127.0.0.1", 0, ReflectorConfig(rate_limit=0), on_records=handed.extend)
        await server.start()
        request = text.encode_request(text.Heartbeat(1, 1.7e9))
        with server._lock:  # as the reader does: many datagrams before the next hand-over
            for _ in range(LOG_BACKLOG + 25):
                server.reflector.reflect(request, ("127.0.0.1", 40000), 1.0, 1.7e9)
        await server.stop()

    asyncio.run(run())
    not_logged = [r for r in handed if r.outcome == "not-logged"]
    assert [r.detail for r in not_logged] == ["25"]


def test_a_line_writer_writes_in_order_and_never_blocks_its_caller() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream)
    for n in range(1000):
        writer.write(f"line {n}")
    assert writer.close()
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(1000)]


def test_a_line_writer_drops_and_counts_past_its_bound_while_the_reader_stalls() -> None:
    release = threading.Event()

    class Stalled(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(10)
            return super().write(text)

    stream = Stalled()
    writer = LineWriter(stream, max_pending=10)
    writer.write("first")  # the writer thread takes it and stalls on it
    assert not writer.flush(0.05)
    for n in range(25):
        writer.write(f"line {n}")
    assert writer.dropped == 15
    release.set()
    assert writer.close()
    assert stream.getvalue().splitlines() == ["first"] + [f"line {n}" for n in range(10)]


def test_a_line_writer_reports_a_lost_reader_once() -> None:
    lost: list[OSError] = []

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    writer = LineWriter(Broken(), on_lost=lost.append)
    writer.write("a")
    writer.flush()
    writer.write("b")
    assert not writer.close()
    assert len(lost) == 1 and isinstance(lost[0], BrokenPipeError)
    assert writer.discarded >= 1
