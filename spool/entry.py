"""The `spool` console script: `spool usage` runs without Typer (spool/usage_cmd.py),
everything else through the Typer app (spool.cli)."""
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
