"""Ingest: overflow files -> raw_events (exactly once), and parsing raw rows.

The hook stores bytes as received.  Here the worker:

* ``ingest_overflow``: moves every ``overflow-*.jsonl`` file (SPOOL_HOME and
  the per-user fallback dir) into ``raw_events``.  Each record carries a unique
  key stored in ``raw_events.dedup_key`` and inserted with ``INSERT OR
  IGNORE``, and a file is deleted only after its rows committed: a crash at any
  point followed by a re-run ingests each event exactly once.
* ``parse_new``: parses rows with ``status='new'``: a JSON object with a
  string ``session_id`` and ``hook_event_name`` becomes ``status='ok'`` with
  those columns filled, and the session facts the index needs
  (``FACT_COLUMNS``: cwd, transcript path, model, permission mode, source), so
  no later step parses the payload to index it; anything else moves to
  ``quarantine`` with its bytes and the reason.  A payload the hook truncated is kept as a flagged event when
  its ids can still be read from the first bytes.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import Engine

from . import db, paths
from .hook import INSERT_SQL

_OVERFLOW_INSERT = INSERT_SQL.replace(
    "INSERT INTO raw_events (received_at, source, cwd, payload, size, truncated) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6",
    "INSERT OR IGNORE INTO raw_events (received_at, source, cwd, payload, size, truncated, "
    "dedup_key, run_id, codex_pid, codex_start) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10",
)
assert _OVERFLOW_INSERT != INSERT_SQL


@dataclass
class IngestResult:
    files: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0


def overflow_dirs(home: Path | None = None) -> list[Path]:
    home = home or paths.spool_home()
    return [home, paths.fallback_overflow_dir(home)]


def overflow_files(home: Path | None = None) -> list[Path]:
    found: list[Path] = []
    for i, directory in enumerate(overflow_dirs(home)):
        if i and not paths.is_private_dir(directory):
            continue  # a fallback dir someone else could write: never trust its files
        try:
            found.extend(sorted(directory.glob(paths.OVERFLOW_PREFIX + "*.jsonl")))
        except OSError:
            continue
    return found


def _quarantine(conn, *, received_at, source, cwd, payload, size, reason, now, raw_event_id=None):
    conn.exec_driver_sql(
        "INSERT INTO quarantine (raw_event_id, received_at, quarantined_at, source, cwd, payload,"
        " size, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (raw_event_id, received_at, now, source, cwd, payload, size, reason),
    )


def _process_of(rec: dict) -> tuple:
    """(run id, Codex pid, its start time) the hook kept in an overflow record
    (spool.hook.write_overflow); None for what it did not know (or an older record)."""
    run_id, pid, start = rec.get("run_id"), rec.get("codex_pid"), rec.get("codex_start")
    if not (isinstance(pid, int) and not isinstance(pid, bool)):
        pid = start = None
    elif not (isinstance(start, int) and not isinstance(start, bool)):
        start = None
    return clean_text(run_id) if isinstance(run_id, str) and run_id else None, pid, start


def ingest_overflow(engine: Engine, home: Path | None = None, now: float | None = None) -> IngestResult:
    """Move every overflow file into raw_events, exactly once."""
    result = IngestResult()
    for path in overflow_files(home):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        now_ = time.time() if now is None else now
        with db.write(engine) as conn:
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    payload = base64.b64decode(rec["payload_b64"], validate=True)
                    args = (float(rec["received_at"]), "overflow", clean_text(rec.get("cwd")),
                            payload, int(rec.get("size", len(payload))),
                            int(rec.get("truncated", 0)), clean_text(str(rec["key"])),
                            *_process_of(rec))
                except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                    _quarantine(conn, received_at=now_, source="overflow", cwd=None,
                                payload=line, size=len(line), now=now_,
                                reason=f"unreadable overflow record {path.name}:{n + 1}: {exc}")
                    result.quarantined += 1
                    continue
                cur = conn.exec_driver_sql(_OVERFLOW_INSERT, args)
                if cur.rowcount:
                    result.events += 1
                else:
                    result.duplicates += 1
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        result.files += 1
    return result


_ID_RE = {
    name: re.compile(rb'"%s"\s*:\s*"([^"\\]{1,200})"' % name.encode())
    for name in ("session_id", "hook_event_name", "turn_id")
}


def _salvage(payload: bytes) -> dict | None:
    """Ids from the first bytes of a truncated payload, or None."""
    head = payload[:65536]
    found = {}
    for name, rx in _ID_RE.items():
        m = rx.search(head)
        if m:
            found[name] = m.group(1).decode("utf-8", "replace")
    if "session_id" in found and "hook_event_name" in found:
        return found
    return None


# raw_events column <- payload key: the session facts the index reads
# (spool.aggregate.index); ``source`` only from SessionStart.
FACT_COLUMNS = (("payload_cwd", "cwd"), ("payload_transcript_path", "transcript_path"),
                ("payload_model", "model"), ("payload_permission_mode", "permission_mode"),
                ("payload_source", "source"))


def payload_facts(obj: dict) -> dict:
    """The FACT_COLUMNS of a payload: non-empty strings, else None."""
    facts = {}
    for column, key in FACT_COLUMNS:
        value = obj.get(key)
        if key == "source" and obj.get("hook_event_name") != "SessionStart":
            value = None
        if key == "transcript_path" and obj.get("agent_id"):
            value = None  # a subagent's event names the child's rollout, not the session's
        facts[column] = value if isinstance(value, str) and value else None
    return facts


def classify(payload: bytes, truncated: bool) -> tuple[dict | None, str | None]:
    """(fields, None) for a usable event, or (None, reason) for quarantine.

    The fields: session_id, hook_event_name, turn_id, and the FACT_COLUMNS
    (None where the payload has none: a truncated one, or one only the
    lenient stdlib parser reads, e.g. with NaN or a lone surrogate, which the
    trace builders' orjson reads as an empty payload too)."""
    if truncated:
        ids = _salvage(payload)
        if ids:
            return ids, None
        return None, "payload truncated and its session_id/hook_event_name unreadable"
    if not payload.strip():
        return None, "empty input"
    try:
        obj = orjson.loads(payload)
        facts = payload_facts(obj) if isinstance(obj, dict) else {}
    except orjson.JSONDecodeError:
        facts = {}
        try:
            obj = json.loads(payload)
        except UnicodeDecodeError as exc:
            return None, f"not UTF-8: {exc}"
        except ValueError as exc:
            return None, f"not JSON: {exc}"
        except RecursionError:
            return None, "JSON nested too deeply"
    if not isinstance(obj, dict):
        return None, f"not a JSON object (got {type(obj).__name__})"
    missing = [k for k in ("session_id", "hook_event_name")
               if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        return None, "missing or invalid " + " and ".join(missing)
    turn = obj.get("turn_id")
    fields = {
        "session_id": obj["session_id"],
        "hook_event_name": obj["hook_event_name"],
        "turn_id": turn if isinstance(turn, str) and turn else None,
    }
    for key, value in fields.items():
        if value is not None and not _is_text(value):
            return None, f"{key} is not valid Unicode text (a lone surrogate)"
    return {**fields, **facts}, None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(value):
    """A str SQLite can store: lone surrogates (an undecodable path, say) become U+FFFD."""
    if isinstance(value, str) and not _is_text(value):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


_PARSED_UPDATE = (
    "UPDATE raw_events SET status = 'ok', session_id = ?, turn_id = ?, event = ?, "
    + ", ".join(f"{column} = ?" for column, _key in FACT_COLUMNS) + " WHERE id = ?")


def parse_new(engine: Engine, now: float | None = None, limit: int = 2000) -> tuple[int, int]:
    """Parse up to ``limit`` new raw rows.  Returns (events, quarantined)."""
    now = time.time() if now is None else now
    ok = bad = 0
    with db.write(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, received_at, source, cwd, payload, size, truncated FROM raw_events"
            " WHERE status = 'new' ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        for rid, received_at, source, cwd, payload, size, truncated in rows:
            fields, reason = classify(bytes(payload), bool(truncated))
            if fields is not None:
                try:
                    with conn.begin_nested():  # a row SQLite refuses must not block the others
                        conn.exec_driver_sql(
                            _PARSED_UPDATE,
                            (fields["session_id"], fields.get("turn_id"),
                             fields["hook_event_name"],
                             *(fields.get(column) for column, _key in FACT_COLUMNS), rid))
                    ok += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - kept in quarantine with the reason
                    reason = f"could not store the parsed event: {type(exc).__name__}: {exc}"
            _quarantine(conn, received_at=received_at, source=source, cwd=clean_text(cwd),
                        payload=payload, size=size, reason=reason, now=now, raw_event_id=rid)
            conn.exec_driver_sql("DELETE FROM raw_events WHERE id = ?", (rid,))
            bad += 1
    return ok, bad


def ingest_all(engine: Engine, home: Path | None = None, now: float | None = None) -> IngestResult:
    """Overflow files, then every new row parsed (what the worker's ingest job runs).

    A failure ingesting overflow (raised after parsing) never stops the parsing
    of what the hooks stored directly."""
    failure = None
    try:
        result = ingest_overflow(engine, home, now)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after parsing
        result, failure = IngestResult(), exc
    while True:
        ok, bad = parse_new(engine, now)
        result.quarantined += bad
        if ok + bad == 0:
            break
    if failure is not None:
        raise failure
    return result


def hook_error_lines(home: Path | None = None) -> list[tuple[str, str]]:
    """(timestamp, message) lines the hook left in hook-errors.log files."""
    out = []
    for directory in overflow_dirs(home):
        p = directory / paths.HOOK_ERROR_LOG
        try:
            for line in p.read_text("utf-8", "replace").splitlines():
                parts = line.split("\t", 2)
                if len(parts) == 3:
                    out.append((parts[0], parts[2]))
        except OSError:
            continue
    return out


