"""The `spool` console script (``spool = "spool.entry:main"``; ``python -m spool`` too).

Why not the Typer app directly: importing Typer (with click, rich and the
pydantic it finds) costs ~0.3 s of CPU before any command runs, and
`spool usage` is meant to answer in about the time Python takes to start (it
is benchmarked against ccusage: scripts/bench_usage.py).  So this module
imports nothing but ``sys`` and hands ``spool usage`` with plain options to
spool/usage_cmd.py; every other line — every other command, ``spool usage
--help``, a malformed option — goes to the Typer app (spool/cli.py), which
also declares `spool usage` for its help and errors and runs the same
``usage_cmd.run``.  tests/test_usage_cli.py proves both ways answer alike.
"""
from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["usage"]:
        from .usage_cmd import fast_main

        rc = fast_main(argv[1:])
        if rc is not None:
            sys.stdout.flush()
            raise SystemExit(rc)
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
