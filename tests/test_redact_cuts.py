"""Secrets are redacted before any text is cut, everywhere text leaves spool.

Texts dense with keys (a bearer token in a curl command, an OpenAI key, a GitHub token, an
AWS key, repeated) go through the real pipeline in many phases, so every cut (each preview
limit, the summaries, names, descriptions, error messages, the terminal width of `spool
show`) falls inside a key somewhere: hook subprocess -> ingest -> aggregate -> every sink
(Infinium receiver, file, OTLP receiver, ATIF file), the stored trace bodies, `spool show`,
`spool export`.  Nothing may carry the first 4 characters of a key, nor any 8 characters of
its random part.  (4: the shortest key-format start, "sk-p"/"ghp_"/"AKIA", already names the
kind; fewer characters are ordinary text.)
"""
from __future__ import annotations

import json
import random
import string
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.hookproc import run_hook
from support.otlp_receiver import OtlpReceiver
from spool import aggregate, db, ingest
from spool.cli import get_app
from spool.demo.receiver import Receiver
from spool.deliver import Dispatcher
from spool.redact import cut, scrub_tail
from spool.trace import clip
from support.delivery import SECRET, make_project

_rng = random.Random(13)
_ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    # Upper case first: never a run of hex digits that an id could contain by chance.
    return _rng.choice("GHJKLMNPQRSTVWXYZ") + "".join(_rng.choice(_ALNUM) for _ in range(n - 1))


BEARER = _rand(32)
OPENAI = "sk-proj-" + _rand(40)
GITHUB = "ghp_" + _rand(36)
AWS = "AKIA" + "".join(_rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
KEYS = (BEARER, OPENAI, GITHUB, AWS)
UNIT = (f"curl -H 'Authorization: Bearer {BEARER}' https://api.example/v1 && "
        f"export OPENAI_API_KEY={OPENAI}; gh auth {GITHUB} aws {AWS}\n")
PHASES = range(0, len(UNIT), 11)  # every cut lands in a key at many offsets


def text(phase: int, repeat: int = 60) -> str:
    return "." * phase + UNIT * repeat  # > 8000 characters: past every summary limit


def leaks(blob: str) -> list[str]:
    """Pieces of a key found in ``blob``: a prefix of 4+ characters, or 8 characters of
    its random part."""
    found = []
    for key in KEYS:
        start = 0 if key is BEARER else 4
        pieces = [key[:n] for n in range(4, len(key) + 1)]
        pieces += [key[i:i + 8] for i in range(start, len(key) - 7)]
        found += [p for p in pieces if p in blob]
    return sorted(set(found), key=len)[:5]


# --- the cut itself ------------------------------------------------------------------

@pytest.mark.parametrize("limit", [4, 5, 10, 30, 80, 100, 200, 300, 1000])
def test_a_cut_at_every_position_of_a_key_leaves_none_of_it(limit):
    for phase in range(len(UNIT)):
        out = cut(text(phase, 8), limit)
        assert len(out) <= limit and leaks(out) == [], (phase, out[-60:])


def test_a_key_already_cut_before_spool_saw_it_loses_its_start_at_the_cut():
    # A JWT whose third segment was cut upstream does not match the full pattern; at
    # spool's cut, its start is still dropped.  So are a key format's first characters
    # and the value after Authorization: Bearer / API_KEY= / a URL's user.
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflK"
    assert scrub_tail("see " + jwt) == "see "
    assert scrub_tail("aws AKI") == "aws " and scrub_tail("key sk-pr") == "key "
    assert scrub_tail("-H 'Authorization: Bearer abc") == "-H 'Authorization: Bearer "
    assert scrub_tail("export API_KEY=abc") == "export API_KEY="
    assert scrub_tail("postgres://admin:hunt") == "postgres://admin:"
    assert clip("see " + jwt + " and more" * 9, 40, redact=True) == "see ..."
    # ordinary words at a cut stay
    assert scrub_tail("the quick brown fox") == "the quick brown fox"
    assert cut("a" * 50, 10) == "aaaaaaa..."


def test_without_redaction_a_cut_is_plain():
    assert cut(text(0), 60, redact=False) == text(0)[:57] + "..."
    assert BEARER[:10] in clip(text(0), 60)


# --- the real pipeline ---------------------------------------------------------------

def _session(sid: str, project: Path) -> list[dict]:
    evs = [{"hook_event_name": "SessionStart", "source": "startup"}]
    for i, phase in enumerate(PHASES):
        t, tid = text(phase), f"{sid}-t{i}"
        call = f"{tid}-call"
        turn = [{"hook_event_name": "UserPromptSubmit", "prompt": t},
                {"hook_event_name": "PreModelRequest", "model": "gpt-5"},
                {"hook_event_name": "PostModelRequest", "status": "failed", "error": t},
                {"hook_event_name": "PreToolUse", "tool_name": "Bash",
                 "tool_input": {"command": t}, "tool_use_id": call},
                {"hook_event_name": "PostToolUse", "tool_name": "Bash",
                 "tool_input": {"command": t}, "tool_response": t, "tool_use_id": call},
                {"hook_event_name": "Stop", "last_assistant_message": t}]
        for e in turn:
            e["turn_id"] = tid
        evs.extend(turn)
    evs.append({"hook_event_name": "SessionEnd", "reason": "exit"})
    for e in evs:
        e.update(session_id=sid, cwd=str(project))
    return evs


def test_keys_across_every_cut_never_leave_spool(tmp_path, monkeypatch):
    sid = "0199aaaa-bbbb-7ccc-8ddd-eeeeffff0013"
    atif_dir, file_dir = tmp_path / "atif", tmp_path / "files"
    with Receiver() as rx, OtlpReceiver() as orx:
        project = make_project(tmp_path, rx.url, granularity="both",
                               sinks=["infinium", "file", "otlp", "atif"])
        monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", orx.url)
        monkeypatch.setenv("SPOOL_ATIF_DIR", str(atif_dir))
        monkeypatch.setenv("SPOOL_FILE_SINK_DIR", str(file_dir))
        for ev in _session(sid, project):
            r = run_hook(json.dumps(ev).encode(), cwd=project)
            assert r.returncode == 0, r.stderr
        engine = db.open_db()
        try:
            ingest.ingest_all(engine)
            aggregate.aggregate(engine, time.time() + 60)
            with db.read(engine) as conn:
                bodies = [r[0] for r in conn.exec_driver_sql("SELECT body FROM traces")]
                rows = [r for r in conn.exec_driver_sql("SELECT trace_id, kind FROM traces")]
            assert len(bodies) == len(PHASES) + 1  # a trace per turn and the summary
            with Dispatcher(engine) as d:
                for _ in range(5):
                    d.run_once(time.time() + 120)
            with db.read(engine) as conn:
                states = {s for (s,) in conn.exec_driver_sql("SELECT state FROM outbox")}
            assert states == {"sent"}
        finally:
            engine.dispose()
        sent_infinium = [r.body.decode() for r in rx.requests]
        sent_otlp = [r.raw.decode("utf-8", "replace") for r in orx.requests]
    assert len(sent_infinium) == len(bodies) and sent_otlp
    files = [p.read_text() for p in sorted(file_dir.glob("*.json"))]
    atif = [p.read_text() for p in sorted(atif_dir.glob("*.json"))]
    assert len(files) == len(bodies) and len(atif) == 1
    runner = CliRunner()
    shown = []
    for trace_id, _kind in rows:
        res = runner.invoke(get_app(), ["show", trace_id])
        assert res.exit_code == 0, res.output
        shown.append(res.output)
    exports = []
    for args in ([sid], [sid, "--full"], [sid, "--format", "json"]):
        res = runner.invoke(get_app(), ["export", *args])
        assert res.exit_code == 0, res.output
        exports.append(res.stdout)

    # Every surface really carried the cut texts (a test that can fail), and no key.
    first = json.loads(sent_infinium[0])
    assert first["input_summary"].endswith("...") and "[REDACTED:" in first["input_summary"]
    assert any("[REDACTED:" in s["output_preview"] for s in first["steps"])
    for name, blobs in (("stored bodies", bodies), ("infinium", sent_infinium),
                        ("otlp", sent_otlp), ("file sink", files), ("atif sink", atif),
                        ("show", shown), ("export", exports)):
        joined = "\n".join(blobs)
        assert "[REDACTED:" in joined, name
        assert leaks(joined) == [], name
