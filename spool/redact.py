"""Redaction of common secret patterns before a trace leaves the machine.

On by default (``SPOOL_REDACT=false`` or ``"redact": false`` in the project
config turns it off).  Applied to every string of a trace body when a sink
renders it, so what is stored locally stays exact and what is sent is safe.
Each match is replaced by ``[REDACTED:<kind>]``.
"""
from __future__ import annotations

import re
from typing import Any

# (kind, pattern).  Ordered: specific token formats first, generic ones last.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)),
    ("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("stripe_key", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("bearer", re.compile(r"(?i)\b(authorization\s*:\s*bearer\s+)[A-Za-z0-9._~+/\-]{12,}=*")),
    ("url_password", re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]{3,}(?=@)")),
    ("assignment", re.compile(
        r"(?i)\b((?:[A-Z0-9_]*_)?(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key)"
        r"[A-Z0-9_]*\s*[=:]\s*[\"']?)(?![\"']?\[REDACTED)[^\s\"'&]{6,}")),
]


# A literal every pattern's match contains (case-insensitive: a superset): a text without any
# is returned as is after one scan instead of one per pattern (most texts; the render path).
_MAYBE = re.compile(r"(?i)BEGIN|sk-|gh[pousr]_|github_pat_|AKIA|ASIA|xox|AIza|k_live|k_test|eyJ"
                    r"|bearer|://|api|secret|token|passw|access")


def redact_text(text: str) -> str:
    if not _MAYBE.search(text):
        return text
    for kind, pattern in PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m, k=kind: m.group(1) + f"[REDACTED:{k}]", text)
        else:
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (JSON-like) with every string redacted; keys are kept."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
