"""Secret-looking strings are redacted before a trace leaves the machine."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from spool.redact import redact, redact_text

CORPUS = Path(__file__).parent / "fixtures" / "redaction"


def _samples(name: str) -> list[str]:
    return [l for l in (CORPUS / name).read_text().splitlines() if l and not l.startswith("#")]


# The secret part of each sample in secrets.txt: it must not survive redaction.
SECRET_PARTS = [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "abcdef0123456789abcdef", "eyJzdWIiOiIxMjM0NTY3ODkwIn0", "hunter2secret",
    "correct-horse-battery", "9f8e7d6c5b4a3210", "BEGIN RSA PRIVATE KEY",
]


@pytest.mark.parametrize("sample", _samples("secrets.txt"))
def test_every_secret_sample_is_redacted(sample):
    out = redact_text(sample)
    assert "[REDACTED:" in out
    leaked = [s for s in SECRET_PARTS if s in out]
    assert leaked == []


@pytest.mark.parametrize("sample", _samples("clean.txt"))
def test_ordinary_text_is_unchanged(sample):
    assert redact_text(sample) == sample


def test_redact_walks_json_and_keeps_structure():
    body = {"steps": [{"input_preview": "export TOKEN=ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
                       "duration_ms": 12}], "name": "fix it", "n": None}
    out = redact(body)
    assert out["name"] == "fix it" and out["n"] is None and out["steps"][0]["duration_ms"] == 12
    assert re.search(r"TOKEN=\[REDACTED:\w+\]", out["steps"][0]["input_preview"])
    assert body["steps"][0]["input_preview"].endswith("0123456789")  # the input is not modified


def test_the_ascii_prefilter_agrees_with_the_case_insensitive_pattern():
    """redact's fast pre-check (lower-cased substrings for ASCII text) says "maybe" exactly
    when the case-insensitive ``_MAYBE`` regex finds something; other text uses the regex."""
    import random

    from spool import redact

    alphabet = "beginarsk-ecrthpousr_ithubpatkiazylvxoejBEGINSKAXZ:/ wdTOKENCESS"
    rng = random.Random(7)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
             for _ in range(20000)]
    # the alternatives of redact._MAYBE, written out here (not taken from the code under test)
    literals = ["BEGIN", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA",
                "ASIA", "xox", "AIza", "k_live", "k_test", "eyJ", "bearer", "://", "api",
                "secret", "token", "passw", "access"]
    for lit in literals:  # each literal in random case, whole and cut short
        for _ in range(50):
            mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in lit)
            texts.append(rng.choice(texts[:100]) + mixed[:rng.randint(len(lit) - 1, len(lit))])
    for t in texts:
        assert redact._maybe_secret(t) == bool(redact._MAYBE.search(t)), t
    assert 500 < sum(map(redact._maybe_secret, texts)) < len(texts) - 500  # both answers
    # non-ASCII: the regex's case folding ("ſ" ~ "s")
    assert redact.redact_text("ſecret=abcdefgh12") != "ſecret=abcdefgh12"


def test_the_cut_guard_gives_the_plain_regex_answer():
    """scrub_tail skips its two context regexes when the tail holds none of _MAYBE's
    literals and looks words up in a set of key-format prefixes: same answers as running
    every regex and comparing prefixes one by one (written out here)."""
    import random

    from spool import redact

    def plain(kept: str) -> str:
        off = max(len(kept) - 256, 0)
        tail = kept[off:]
        for rx, group in ((redact._VALUE_AT_END, 1), (redact._KEY_AT_END, 0)):
            m = rx.search(tail)
            if m:
                return kept[:off + m.start(group)]
        m = redact._WORD_AT_END.search(tail)
        if m and any(p.startswith(m.group(0)) for p in redact._STARTS):
            return kept[:off + m.start()]
        return kept

    rng = random.Random(11)
    pieces = ["sk-", "sk_live_", "rk_te", "ghp_", "gith", "github_pat_", "AKIA", "ASI", "xoxb-",
              "AIza", "eyJ", "Authorization: Bearer ", "https://user:", "API_KEY=", "token: '",
              "ſecret=", "abc", "Q9z", "-", "_", " ", "\n", "/", "@", "é", "x" * 300]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(20000)]
    changed = 0
    for t in texts:
        assert redact.scrub_tail(t) == plain(t), t
        changed += redact.scrub_tail(t) != t
    assert 1000 < changed < len(texts) - 1000  # both answers
