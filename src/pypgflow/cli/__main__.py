"""``python -m pypgflow.cli``: the `pypgflow` command."""

from pypgflow.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="pypgflow")
