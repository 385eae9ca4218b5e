"""Token usage and cost storage: the one owner of ``model_requests`` and ``usage_hours``.

Writing: ``record_traces(con, bodies)`` runs in the aggregate writer's
transaction, with the trace bodies it writes (dicts or their JSON).  Each
``model_request`` step with usage becomes one ``model_requests`` row keyed by
(session_id, turn_id, seq): a turn trace, its revisions and the session summary
that repeats its steps all land on the same rows, so a request is counted once
whatever the granularity.  A turn whose usage came only from the rollout is one
row with seq 0 (replaced by the real requests if a later revision has them).
``usage_hours`` keeps the same numbers summed per UTC hour, session, model and
project, updated by the difference each upsert makes; ``usage_days`` sums them
again per local day, model and project (no session), in the same statements'
transaction, for the reports that do not group by session.

Counting once: usage comes from each real request's PostModelRequest hook, so a
forked or subagent session's copied history adds nothing to the parent (a child's
requests are its own session's rows); only the rollout fallback reads token lines.

Local days depend on the machine's time zone: ``kv['usage_days:zone']`` holds
the zone (``zone()``) the ``usage_days`` rows were computed in.  A writer in
another zone rebuilds them from ``usage_hours``; a reader in another zone (or a
``--since``/``--until`` bound whose local midnight is not on a UTC hour, as in a
half-hour zone) answers from ``usage_hours`` instead, so the answer is the same.

Reading: ``report`` answers `spool usage` from ``usage_days`` (a row per local
day, model and project) or, by session or as above, ``usage_hours`` (a few rows
per session-hour, whatever the number of requests); ``session_costs`` and
``trace_costs`` feed `spool sessions` / `spool history`.
"""
from __future__ import annotations

# `spool usage` imports this module on its way to ``report``, and answers in about
# the time Python takes to start: so nothing here is imported at module level
# but the standard library's cheapest (orjson alone, with the dataclasses, uuid
# and inspect it loads, would double the command's start-up).  The writers
# import what they need inside; tests/test_usage.py checks the command's modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import date
    from typing import Any, Iterable, Mapping, Sequence

TOKEN_KEYS = ("input", "cached", "cache_write", "output", "reasoning", "total")
GROUPS = ("day", "month", "session", "model")
_COLS = ("session_id", "turn_id", "seq", "trace_id", "at", "model") + TOKEN_KEYS + (
    "cost_usd", "project")


def _int(v: Any) -> int:
    return v if type(v) is int else 0  # not bool (a subclass), not float


def requests_of(body: Mapping[str, Any], skip_turns: Iterable[str] = ()) -> list[dict]:
    """The model_requests rows of one trace body (pure), but for steps without usage
    and the turns in ``skip_turns`` (a summary's turns recorded by their turn traces)."""
    if body.get("kind") not in ("turn", "session"):
        return []
    from . import cost as cost_mod  # imported here: `spool usage` never prices
    sid = body.get("session_id")
    if not sid:
        return []
    env = body.get("environment") or {}
    model0, tier = env.get("model"), env.get("service_tier")
    project, tid, t0 = body.get("project"), body.get("trace_id"), body.get("started_at")
    rows: list[dict] = []
    seqs: dict[str, int] = {}
    for s in body.get("steps") or ():
        u = s.get("usage")
        if s.get("action") != "model_request" or not isinstance(u, dict):
            continue
        turn = s.get("turn_id") or body.get("turn_id") or ""
        if turn in skip_turns:
            continue
        seqs[turn] = seq = seqs.get(turn, 0) + 1
        model = s.get("model") or model0
        at = s.get("started_at") or s.get("ended_at") or t0 or 0.0
        usd = s["cost_usd"] if "cost_usd" in s else cost_mod.price_request(
            u, model, at, s.get("service_tier") or tier).usd
        rows.append(_row(sid, turn, seq, tid, at, model, u, usd, project))
    # Turns traced with usage from the rollout only: one row for the turn's total.
    if body.get("kind") == "turn":
        totals = [(body.get("turn_id") or "", body.get("usage") or {}, t0)]
    else:
        totals = [(t.get("turn_id") or "", t.get("usage") or {}, t.get("started_at"))
                  for t in body.get("turns") or ()]
    for turn, u, at in totals:
        if turn not in seqs and turn not in skip_turns and (_int(u.get("total")) or _int(u.get("input"))
                                 or _int(u.get("output"))):
            at = at or t0 or 0.0
            rows.append(_row(sid, turn, 0, tid, at, model0, u,
                             cost_mod.price_request(u, model0, at, tier).usd, project))
    return rows


def _row(sid, turn, seq, tid, at, model, u, usd, project) -> dict:
    return {"session_id": sid, "turn_id": turn, "seq": seq, "trace_id": tid, "at": float(at),
            "model": model, **{k: _int(u.get(k)) for k in TOKEN_KEYS}, "cost_usd": usd,
            "project": project}


_UPSERT = (
    f"INSERT INTO model_requests ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})"
    " ON CONFLICT(session_id, turn_id, seq) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLS[3:]))
# The stored rows of a JSON list of [session_id, turn_id]: one statement (row-value IN).
_STORED = (f"SELECT {', '.join(_COLS)} FROM model_requests WHERE (session_id, turn_id) IN"
           " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))")
_BUCKET_VALUES = ("requests",) + TOKEN_KEYS + ("cost_usd", "unpriced")
_BUCKET = (
    "INSERT INTO usage_hours (hour, session_id, model, project, "
    + ", ".join(_BUCKET_VALUES) + ") VALUES (" + ", ".join("?" * (4 + len(_BUCKET_VALUES)))
    + ") ON CONFLICT(hour, session_id, model, project) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _BUCKET_VALUES))


# The same sums per local day: SQLite computes the day, as the usage_hours report does.
_DAY_BUCKET = (
    "INSERT INTO usage_days (day, model, project, " + ", ".join(_BUCKET_VALUES)
    + ") VALUES (date(? * 3600, 'unixepoch', 'localtime'), "
    + ", ".join("?" * (2 + len(_BUCKET_VALUES)))
    + ") ON CONFLICT(day, model, project) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _BUCKET_VALUES))
KV_ZONE = "usage_days:zone"


def zone() -> str:
    """This process's time zone as local days see it (names and offsets): the rollup
    is valid where it was computed.  TZ=UTC and an /etc/localtime of UTC are alike."""
    import time

    return f"{time.tzname[0]}/{time.tzname[1]} {time.timezone} {time.altzone} {time.daylight}"


def _stored_zone(con) -> str | None:
    row = con.execute("SELECT value FROM kv WHERE key = ?", (KV_ZONE,)).fetchone()
    return row[0] if row else None


def rebuild_days(con) -> int:
    """Recompute ``usage_days`` from ``usage_hours`` in this process's zone and record
    the zone (DB-API connection, inside the caller's transaction).  Returns the rows."""
    con.execute("DELETE FROM usage_days")
    sums = ", ".join(f"sum({c})" for c in _BUCKET_VALUES)
    n = con.execute(
        f"INSERT INTO usage_days (day, model, project, {', '.join(_BUCKET_VALUES)})"
        f" SELECT date(hour * 3600, 'unixepoch', 'localtime') AS d, model, project, {sums}"
        " FROM usage_hours GROUP BY d, model, project").rowcount
    con.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                " SET value = excluded.value", (KV_ZONE, zone()))
    return n


def _bucket(r: Mapping[str, Any]) -> tuple:
    return (int(r["at"] // 3600), r["session_id"], r["model"] or "", r["project"] or "")


def _add(buckets: dict, r: Mapping[str, Any], sign: int) -> None:
    b = buckets.setdefault(_bucket(r), [0] * len(_BUCKET_VALUES))
    b[0] += sign
    for i, k in enumerate(TOKEN_KEYS, 1):
        b[i] += sign * r[k]
    if r["cost_usd"] is None:
        b[-1] += sign
    else:
        b[-2] += sign * r["cost_usd"]


def record_traces(con, bodies: Iterable[Mapping[str, Any] | str | bytes]) -> int:
    """Record the model requests of ``bodies`` (trace body dicts or their JSON) on the
    DB-API connection ``con``, inside the caller's transaction.  Idempotent.
    Returns how many request rows were inserted or changed."""
    rows: list[dict] = []
    for body in bodies:
        if isinstance(body, (str, bytes)):
            import orjson

            body = orjson.loads(body)
        rows.extend(requests_of(body))
    return record_requests(con, rows)


def record_requests(con, requests: Iterable[Mapping[str, Any]]) -> int:
    """Record ``requests`` (rows of ``requests_of``) on the DB-API connection ``con``,
    inside the caller's transaction.  Idempotent; returns the rows inserted or changed."""
    new: dict[tuple, dict] = {}
    for r in requests:
        new[(r["session_id"], r["turn_id"], r["seq"])] = r
    if not new:
        return 0
    import json
    from operator import itemgetter

    old: dict[tuple, dict] = {}
    for row in con.execute(_STORED, (json.dumps(sorted({(k[0], k[1]) for k in new})),)):
        old[(row[0], row[1], row[2])] = dict(zip(_COLS, row))
    real = {(k[0], k[1]) for k in (*old, *new) if k[2] > 0}
    values = itemgetter(*_COLS)  # a row's values in _UPSERT's order
    buckets: dict[tuple, list] = {}
    upserts, deletes = [], []
    for key, r in new.items():
        sid, turn, seq = key
        if seq == 0 and (sid, turn) in real:
            continue  # the turn's real requests are (or will be) recorded
        if seq > 0 and (sid, turn, 0) in old and (sid, turn, 0) not in deletes:
            deletes.append((sid, turn, 0))
            _add(buckets, old[(sid, turn, 0)], -1)
        prev = old.get(key)
        if prev is not None:
            if all(prev[c] == r[c] for c in _COLS if c != "trace_id"):
                continue
            _add(buckets, prev, -1)
        _add(buckets, r, +1)
        upserts.append(values(r))
    con.executemany("DELETE FROM model_requests WHERE session_id = ? AND turn_id = ? AND seq = ?",
                    deletes)
    con.executemany(_UPSERT, upserts)
    changed = [k + tuple(v) for k, v in buckets.items() if any(v)]
    con.executemany(_BUCKET, changed)
    if changed:
        stored = _stored_zone(con)
        if stored == zone():
            con.executemany(_DAY_BUCKET, [(c[0],) + c[2:] for c in changed])
        elif stored is not None:  # None: no usage_days yet (migration 0004's backfill)
            rebuild_days(con)
    return len(upserts)


def backfill(con, batch: int = 500) -> int:
    """Record every stored trace (oldest first) on DB-API connection ``con``: the
    migration that adds the tables runs it once.  Returns the rows recorded."""
    import orjson

    n, last = 0, ""
    while rows := con.execute("SELECT trace_id, body FROM traces WHERE trace_id > ? AND kind"
                              " IN ('turn', 'session') ORDER BY trace_id LIMIT ?",
                              (last, batch)).fetchall():
        bodies = []
        for _, body in rows:
            try:
                bodies.append(orjson.loads(body))
            except (orjson.JSONDecodeError, TypeError):
                continue  # a body that is not JSON has no usage to report
        n += record_traces(con, bodies)
        last = rows[-1][0]
    return n


# --- reading -------------------------------------------------------------------


def _hour_bounds(since: date | None, until: date | None) -> tuple[int, int]:
    """Local calendar dates (until inclusive) -> [lo, hi) in UTC hours."""
    if since is None and until is None:
        return -1, 2 ** 40
    from datetime import datetime, timedelta

    lo = int(datetime.combine(since, datetime.min.time()).timestamp() // 3600) if since else -1
    hi = (int(-(-datetime.combine(until + timedelta(days=1), datetime.min.time()).timestamp()
                // 3600)) if until else 2 ** 40)
    return lo, hi


_KEY = {
    "day": "date(hour * 3600, 'unixepoch', 'localtime')",
    "month": "strftime('%Y-%m', hour * 3600, 'unixepoch', 'localtime')",
    "session": "session_id",
    "model": "model",
}
_DAY_KEY = {"day": "day", "month": "substr(day, 1, 7)", "model": "model"}
# Hours on either side of a bound checked by days_usable: offsets span 26 hours.
_NEAR = 50
_WRONG_SIDE = (
    "WITH RECURSIVE h(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM h WHERE x < ?)"
    " SELECT count(*) FROM h WHERE (x >= ?) != (date(x * 3600, 'unixepoch', 'localtime') >= ?)")


def days_usable(con, since: date | None = None, until: date | None = None) -> bool:
    """Whether ``usage_days`` answers as ``usage_hours`` would: computed in this
    process's zone, and the hours the bounds select ([lo, hi) of ``_hour_bounds``)
    are exactly those of the local days from ``since`` to ``until`` (not so when a
    local midnight falls inside a UTC hour, or a clock change crosses it)."""
    same = _stored_zone(con) == zone()
    if not same or (since is None and until is None):
        return same
    from datetime import timedelta

    lo, hi = _hour_bounds(since, until)
    for day, bound in ((since, lo), (until and until + timedelta(days=1), hi)):
        if day and con.execute(_WRONG_SIDE, (bound - _NEAR, bound + _NEAR, bound,
                                             day.isoformat())).fetchone()[0]:
            return False
    return True


def report(con, by: str = "day", since: date | None = None, until: date | None = None,
           project: str | None = None, days: bool = True) -> dict:
    """`spool usage`: one row per group and a totals row.

    ``con``: a DB-API (sqlite3) connection, in one read transaction (the zone and
    the rows of one snapshot); the command reads without SQLAlchemy.  Each row: key,
    requests, input (incl. cached), cached, output (incl. reasoning), reasoning,
    total, cost_usd (the priced requests' sum; None when none was priced),
    unpriced (requests without a price: cost_usd is then partial), models
    (sorted).  Days and months are local time, in whole UTC hours.  Read from
    ``usage_days`` when ``days_usable`` (and ``days``: False is for tests),
    else from ``usage_hours``: the same answer.
    """
    if by not in GROUPS:
        raise ValueError(f"by must be one of {GROUPS}")
    lo, hi = _hour_bounds(since, until)
    params = {"lo": lo, "hi": hi, "project": project,
              "since": since and since.isoformat(), "until": until and until.isoformat()}
    if days and by != "session" and days_usable(con, since, until):
        table, key, first = "usage_days", _DAY_KEY[by], "NULL"
        where = " AND ".join(["1"] + ["day >= :since"] * bool(since)
                             + ["day <= :until"] * bool(until)
                             + ["project = :project"] * bool(project))
    else:
        table, key, first = "usage_hours", _KEY[by], "min(hour)"
        # Only the bounds given: a range over the whole table would walk the unique
        # index and look every row up (a third slower than scanning the table).
        where = " AND ".join(["1"] + ["hour >= :lo"] * bool(since) + ["hour < :hi"] * bool(until)
                             + ["project = :project"] * bool(project))
    sql = (f"SELECT {key} AS key, {first} AS first_hour, sum(requests), sum(input),"
           " sum(cached), sum(cache_write), sum(output), sum(reasoning), sum(total),"
           " sum(cost_usd), sum(unpriced), group_concat(DISTINCT model)"
           f" FROM {table} WHERE {where} GROUP BY key HAVING sum(requests) > 0"
           f" ORDER BY {'first_hour, key' if by == 'session' else 'key'}")
    rows = [_group(r[0], r[2:11], r[11]) for r in con.execute(sql, params)]
    totals = _group("total", [sum(x[k] for x in rows) for k in (
        "requests", "input", "cached", "cache_write", "output", "reasoning", "total")]
        + [sum(x["cost_usd"] or 0.0 for x in rows), sum(x["unpriced"] for x in rows)],
        ",".join(m for x in rows for m in x["models"]))
    if rows and all(x["cost_usd"] is None for x in rows):
        totals["cost_usd"] = None
    unpriced_models = [m or "(none named)" for (m,) in con.execute(
        f"SELECT DISTINCT model FROM {table} WHERE {where} AND unpriced > 0 ORDER BY model",
        params)] if totals["unpriced"] else []
    return {"by": by, "rows": rows, "totals": totals, "unpriced_models": unpriced_models}


def _group(key, nums: Sequence, models: str | None) -> dict:
    requests, inp, cached, cw, out, reasoning, total, usd, unpriced = nums
    return {"key": key or "(unknown)", "requests": requests, "input": inp, "cached": cached,
            "cache_write": cw, "output": out, "reasoning": reasoning, "total": total,
            "cost_usd": round(usd, 9) if requests > unpriced else None,
            "unpriced": unpriced,
            "models": sorted({m for m in (models or "").split(",") if m}) or []}


def session_costs(conn, session_ids: Sequence[str]) -> dict[str, dict]:
    """session_id -> {cost_usd (None when nothing priced), unpriced, total} for the
    sessions named (ix_usage_hours_session: cost grows with the ids, not history)."""
    from sqlalchemy import bindparam, text

    if not session_ids:
        return {}
    sql = text("SELECT session_id, sum(requests), sum(cost_usd), sum(unpriced), sum(total)"
               " FROM usage_hours WHERE session_id IN :ids GROUP BY session_id"
               ).bindparams(bindparam("ids", expanding=True))
    out = {}
    for sid, requests, usd, unpriced, total in conn.execute(sql, {"ids": list(session_ids)}):
        out[sid] = {"cost_usd": round(usd, 9) if requests > unpriced else None,
                    "unpriced": unpriced, "total": total}
    return out


def trace_costs(conn, trace_ids: Sequence[str]) -> dict[str, dict]:
    """trace_id -> {cost_usd, cost_flags} as stored in the trace bodies (None/[] for
    bodies made before cost was added)."""
    import orjson
    from sqlalchemy import bindparam, text

    if not trace_ids:
        return {}
    sql = text("SELECT trace_id, CASE WHEN json_valid(body) THEN json_extract(body, '$.cost_usd') END,"
               " CASE WHEN json_valid(body) THEN json_extract(body, '$.cost_flags') END"
               " FROM traces WHERE trace_id IN :ids"
               ).bindparams(bindparam("ids", expanding=True))
    out = {}
    for tid, usd, flags in conn.execute(sql, {"ids": list(trace_ids)}):
        try:
            flags = orjson.loads(flags) if flags else []
        except orjson.JSONDecodeError:
            flags = []
        out[tid] = {"cost_usd": usd, "cost_flags": flags}
    return out


def forget_sessions(conn, session_ids: Sequence[str]) -> int:
    """Retention: drop the per-request rows of these sessions (SQLAlchemy connection,
    inside the caller's write transaction).  ``usage_hours`` keeps their totals, so
    `spool usage` still reports them."""
    from sqlalchemy import bindparam, text

    if not session_ids:
        return 0
    return conn.execute(text("DELETE FROM model_requests WHERE session_id IN :ids")
                        .bindparams(bindparam("ids", expanding=True)),
                        {"ids": list(session_ids)}).rowcount
