"""spool: a local, lossless trace spool for the OpenAI Codex CLI."""

__version__ = "0.1.0"
