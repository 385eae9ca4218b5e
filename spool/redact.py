"""Redaction of common secret patterns before a trace leaves the machine.

On by default (``SPOOL_REDACT=false`` or ``"redact": false`` in the project
config turns it off).  Each match is replaced by ``[REDACTED:<kind>]``.

Redaction always comes before a cut: a key that straddles a preview limit would
escape the pattern once cut, and its first characters would leave.  So every
place that shortens text calls :func:`cut` (the trace builder, so the stored body
is already redacted; each sink; ``spool show``; exports).  ``cut`` redacts the
whole text first and then, as a second line of defence, never leaves the start
of something key-shaped at the cut (:func:`scrub_tail`): the text may have been
cut before spool saw it, or the key be too short there to match its pattern.
"""
from __future__ import annotations

import re
from functools import lru_cache
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


# The same literals, lower case, for ASCII text (most text): there a case-insensitive match is
# exactly a match in the lower-cased text, and substring tests cost a fraction of the regex's
# scan.  Other text keeps the regex (its case-insensitive matching knows e.g. "ſ" ~ "s").
_LITERALS = ("begin", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "akia", "asia",
             "xox", "aiza", "k_live", "k_test", "eyj", "bearer", "://", "api", "secret", "token",
             "passw", "access")


def _maybe_secret(text: str) -> bool:
    """Whether ``text`` may contain something a pattern matches (``_MAYBE``, faster)."""
    if text.isascii():
        low = text.lower()
        for lit in _LITERALS:
            if lit in low:
                return True
        return False
    return _MAYBE.search(text) is not None


def redact_text(text: str) -> str:
    """``text`` with every match of PATTERNS replaced (see the module's docstring)."""
    if len(text) <= _MEMO_CHARS:  # a trace redacts the same short texts several times
        return _redact_memo(text)
    return _redact(text)


# Short texts are remembered (a command, a prompt: its step, the trace's name and
# summaries, the session summary's copy): at most _MEMO_SIZE x _MEMO_CHARS characters.
_MEMO_CHARS = 2048
_MEMO_SIZE = 1024


def _redact(text: str) -> str:
    if not _maybe_secret(text):
        return text
    for kind, pattern in PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m, k=kind: m.group(1) + f"[REDACTED:{k}]", text)
        else:
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


_redact_memo = lru_cache(maxsize=_MEMO_SIZE)(_redact)


# A secret that starts before a cut is whole within this many characters after it
# (the longest pattern's minimum is < 100): text beyond limit + WINDOW is never
# redacted (it is cut away), so a cut costs O(limit), not O(text).
WINDOW = 1024

# Starts of key formats: a token at a cut that begins with one of these (or is a
# prefix of one, 3+ characters) is dropped.
_STARTS = ("sk-", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "ghp_", "gho_", "ghu_",
           "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA", "xoxa-", "xoxb-", "xoxp-", "xoxr-",
           "xoxs-", "AIza", "eyJ")
_KEY_AT_END = re.compile(
    r"\b(?:" + "|".join(map(re.escape, _STARTS)) + r")[A-Za-z0-9_\-.]*\Z")
# Every first 3+ characters of a key format (a word at a cut that is one of them goes).
_START_PREFIXES = frozenset(p[:n] for p in _STARTS for n in range(3, len(p) + 1))
_WORD_AT_END = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z0-9_\-]{3,}\Z")
# A secret's context at a cut, with the first characters of its value: the value goes.
_VALUE_AT_END = re.compile(
    r"(?i)(?:\bauthorization\s*:\s*bearer\s+|\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:"
    r"|\b(?:[A-Z0-9_]*_)?(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key)[A-Z0-9_]*"
    r"\s*[=:]\s*[\"']?)([^\s\"'&@]+)\Z")
_TAIL = 256  # how far back from a cut a secret's start is looked for


def scrub_tail(kept: str) -> str:
    """``kept`` (the part of a text before a cut) without the start of a secret at its
    end: a token that begins like a key format (or is the first 3+ characters of one),
    or the value after a secret's context (``Authorization: Bearer``, ``user:`` in a
    URL, ``API_KEY=``)."""
    off = max(len(kept) - _TAIL, 0)
    tail = kept[off:]
    if _maybe_secret(tail):  # each match of these two holds one of _MAYBE's literals
        m = _VALUE_AT_END.search(tail)
        if m:
            return kept[:off + m.start(1)]
        m = _KEY_AT_END.search(tail)
        if m:
            return kept[:off + m.start()]
    m = _WORD_AT_END.search(tail)
    if m and m.group(0) in _START_PREFIXES:
        return kept[:off + m.start()]
    return kept


def cut(text: str, limit: int, *, redact: bool = True, mark: str = "...") -> str:
    """``text`` in at most ``limit`` characters, ``mark`` ending a cut.  With ``redact``
    the text is redacted before it is cut, and the cut never leaves a secret's first
    characters (:func:`scrub_tail`); without, it is a plain cut."""
    if limit <= 0:
        return ""
    if not redact:
        if len(text) <= limit:
            return text
        return text[: limit - len(mark)] + mark if limit > len(mark) else text[:limit]
    cutting = len(text) > limit + WINDOW
    text = redact_text(text[: limit + WINDOW] if cutting else text)
    if not cutting and len(text) <= limit:
        return text
    if limit <= len(mark):
        return scrub_tail(text[:limit])
    return scrub_tail(text[: limit - len(mark)]) + mark


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (JSON-like) with every string redacted; keys are kept."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
