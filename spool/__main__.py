"""`python -m spool` is the CLI, entered as the console script is (spool/entry.py)."""
from spool.entry import main

if __name__ == "__main__":
    main()
