"""The `pypgflow` command line: operators' tools over an App and its database."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pypgflow")
def main() -> None:
    """pypgflow: durable workflows for Python on PostgreSQL."""


if __name__ == "__main__":  # pragma: no cover
    main()
