"""`spool ui`: a local, read-only, token-protected web viewer (pure pages + a stdlib server)."""
