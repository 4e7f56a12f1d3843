"""The pypgflow side of bench/peers.py: its job names, and its worker process.

    python bench/peers_pypgflow.py --url URL --job noop [--slots N] [--first-call F] [--calls F]

The worker is what a user runs: ``App(url, workflows=[...]).run_worker()`` with no options (the
``Worker`` defaults: queue "default" with 100 slots, LISTEN/NOTIFY plus a 1 s poll), or with
``queues={"default": N}`` when ``--slots`` is given. It stops gracefully on SIGTERM. Only
pypgflow is imported here, so the worker's start-up time and memory are pypgflow's own.
"""

from __future__ import annotations

import argparse

import bench_flows
from peers_probe import PROBE, add_arguments
from pypgflow import Workflow
from pypgflow.app import App

noop_async = bench_flows.noop


#: the benchmark's job names, and the workflow each one is on pypgflow
WORKFLOWS: dict[str, Workflow] = {
    "noop": noop_async,
    "noop-sync": bench_flows.noop_sync,
    "diamond": bench_flows.diamond,
    "nap": bench_flows.nap,
}


def run_input(job: str, value: float) -> dict[str, float]:
    """A run's input: the sample number, or for ``nap`` the seconds to sleep."""
    return {"sleep": value} if job == "nap" else {"i": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--slots", type=int, help="queues={'default': SLOTS} (default: none)")
    args = parser.parse_args()
    PROBE.configure(args.first_call, args.calls)
    app = App(args.url, workflows=[WORKFLOWS[args.job]])
    if args.slots is None:
        app.run_worker()
    else:
        app.run_worker({"default": args.slots})


if __name__ == "__main__":
    main()
