"""What a job of bench/peers.py does besides its (no) work: it notes wall-clock times for the
producer to read. Shared by both workers (bench/peers_pypgflow.py, bench/peers_pgqueuer.py);
standard library only, so that neither worker loads the other system.

A job calls ``time.time()`` on its first line and, while the probe is armed, hands it to
:meth:`Probe.hit`: the first call of the process writes its time to the ``--first-call`` file;
with ``--calls``, every call appends ``sample time`` to that file (latency passes). Once the first
call is written and no ``--calls`` file is given the probe disarms itself, so a throughput pass
pays one global lookup per job.
"""

from __future__ import annotations

import argparse
import threading
from typing import TextIO


class Probe:
    def __init__(self) -> None:
        self.armed = False
        self._first_call: str | None = None
        self._calls: TextIO | None = None
        self._lock = threading.Lock()  # sync pypgflow steps call it from a thread pool

    def configure(self, first_call: str | None, calls: str | None) -> None:
        self._first_call = first_call
        self._calls = open(calls, "a", encoding="ascii") if calls else None  # noqa: SIM115
        self.armed = first_call is not None or calls is not None

    def hit(self, now: float, sample: int) -> None:
        with self._lock:
            if self._first_call is not None:
                with open(self._first_call, "w", encoding="ascii") as out:
                    out.write(repr(now))
                self._first_call = None
            if self._calls is not None:
                self._calls.write(f"{sample} {now!r}\n")
                self._calls.flush()
            self.armed = self._calls is not None


#: the probe of this process, configured by the worker's command line
PROBE = Probe()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options every benchmark worker takes."""
    parser.add_argument("--url", required=True, help="the database of this pass")
    parser.add_argument("--job", required=True, help="which job or workflow to register")
    parser.add_argument("--first-call", help="file for the time of the first job call")
    parser.add_argument("--calls", help="file for `sample time` of every job call")
