"""`python -m spool` is the CLI."""
from spool.cli import main

if __name__ == "__main__":
    main()
