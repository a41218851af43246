"""``udpbeat monitor``: thousands of targets from one process, for Prometheus and for people.

:mod:`.config` (TOML to targets), :mod:`.shard` (``--shard I/N``) and :mod:`.fleet` (every
target's session, their timers and the routing of what arrives) are pure; :mod:`.shell` owns
the sockets and the loop, :mod:`.metrics` and :mod:`.http` serve what the fleet knows,
:mod:`.status` renders the status page. :mod:`.recorder` closes every target's minutes and
:mod:`.history` keeps them in SQLite (``--db``; :class:`.history.HistoryReader` reads the file).
See ``docs/monitor.md``.
"""
