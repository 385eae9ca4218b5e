"""The usage_days rollup (spool/usage.py): `spool usage` by day, month or model reads a
row per local day, and answers exactly as the usage_hours query it replaces, in every
time zone; in a zone other than the rollup's it answers from usage_hours."""
from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from spool import db, paths, usage

EXE = str(Path(sys.executable).parent / "spool")
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp()
# UTC; whole-hour DST; half-hour offset (local midnight inside a UTC hour); DST at
# midnight (a day's hours on both sides of the next day's); a half-hour DST shift.
ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata", "America/Santiago", "Australia/Lord_Howe")
MODELS = ("gpt-5", "gpt-5-mini", None, "no-such-model")
PROJECTS = ("/p/one", "/p/two", None)


@pytest.fixture
def set_tz(monkeypatch):
    """Switch this process's zone (Python's time and SQLite's 'localtime' alike)."""
    def set_(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_
    monkeypatch.undo()
    time.tzset()


def _con(home: Path) -> sqlite3.Connection:
    home.mkdir(parents=True, exist_ok=True)
    db.upgrade(paths.db_path(home))
    return sqlite3.connect(paths.db_path(home), isolation_level=None)


def _request(rng: random.Random, sid: str, turn: str, seq: int, at: float, project) -> dict:
    inp = rng.randint(0, 50_000)
    out = rng.randint(0, 2_000)
    model = rng.choice(MODELS)
    r = {"session_id": sid, "turn_id": turn, "seq": seq, "trace_id": f"tr-{sid}-{turn}",
         "at": at, "model": model, "input": inp, "cached": inp // 3, "cache_write": 0,
         "output": out, "reasoning": out // 4, "total": inp + out, "project": project}
    r["cost_usd"] = None if model in (None, "no-such-model") else rng.random() / 10
    return r


def _generate(con: sqlite3.Connection, seed: int, sessions: int = 60) -> None:
    """Sessions over two years (some across midnight and clock changes), written by the
    real writer in small transactions, with revisions: changed requests, moved models,
    a turn's rollout total (seq 0) replaced by its real requests."""
    rng = random.Random(seed)
    written: list[dict] = []
    for s in range(sessions):
        sid, project = f"s{seed}-{s}", rng.choice(PROJECTS)
        t = T0 + rng.random() * 700 * 86400
        batch = []
        for k in range(rng.randint(1, 4)):
            turn = f"t{k}"
            if rng.random() < 0.2:
                batch.append(_request(rng, sid, turn, 0, t, project))
            for seq in range(1, rng.randint(1, 5)):
                t += rng.random() * 5400
                batch.append(_request(rng, sid, turn, seq, t, project))
        con.execute("BEGIN IMMEDIATE")
        usage.record_requests(con, batch)
        con.execute("COMMIT")
        written += [r for r in batch if r["seq"] > 0]
    for r in rng.sample(written, len(written) // 5):  # revisions of earlier requests
        again = _request(rng, r["session_id"], r["turn_id"], r["seq"], r["at"], r["project"])
        con.execute("BEGIN IMMEDIATE")
        usage.record_requests(con, [again])
        con.execute("COMMIT")


def _bounds(con: sqlite3.Connection) -> list[tuple]:
    """(since, until) pairs: none, each alone, both; on days with usage, around clock
    changes and a day nothing is recorded on."""
    days = [date.fromisoformat(d) for (d,) in con.execute(
        "SELECT DISTINCT date(hour * 3600, 'unixepoch', 'localtime') FROM usage_hours")]
    picks = sorted(random.Random(1).sample(days, 6)) + [
        date(2025, 3, 30), date(2025, 4, 6), date(2025, 9, 7), date(2025, 10, 26),
        date(2026, 4, 5), date(2026, 9, 6), date(2030, 1, 1)]
    pairs: list[tuple] = [(None, None)]
    for d in picks:
        pairs += [(d, None), (None, d), (d, d), (d - timedelta(days=40), d)]
    return pairs


def _both(con, by, since, until, project) -> tuple[dict, dict]:
    return (usage.report(con, by, since, until, project),
            usage.report(con, by, since, until, project, days=False))


@pytest.mark.parametrize("zone", ZONES)
def test_the_rollup_answers_as_usage_hours_for_every_query(zone, set_tz, spool_home):
    set_tz(zone)
    con = _con(spool_home)
    _generate(con, seed=len(zone))
    assert usage.days_usable(con)
    assert con.execute("SELECT count(*) FROM usage_days").fetchone()[0] < \
        con.execute("SELECT count(*) FROM usage_hours").fetchone()[0]
    used = compared = 0
    for since, until in _bounds(con):
        used += usage.days_usable(con, since, until)
        for by in ("day", "month", "model", "session"):
            for project in (None, "/p/one", "/p/nowhere"):
                got, want = _both(con, by, since, until, project)
                assert got == want, (zone, by, since, until, project)
                compared += bool(want["rows"])
    assert compared > 100
    # Whole-hour zones read the rollup for every bound.  Kolkata's midnights fall inside
    # UTC hours: --since takes the hour before midnight, a day early, so those queries
    # fall back (and still agree, above); --until ends with the hour that starts before
    # midnight, as the day does: the rollup answers.
    if zone in ("UTC", "Europe/Paris"):
        assert used == len(_bounds(con))
    if zone == "Asia/Kolkata":
        assert used == sum(1 for s, u in _bounds(con) if s is None)


def test_incremental_rows_equal_a_rebuild(set_tz, spool_home):
    set_tz("Europe/Paris")
    con = _con(spool_home)
    _generate(con, seed=3)
    sql = "SELECT * FROM usage_days ORDER BY day, model, project"
    kept = con.execute(sql).fetchall()
    con.execute("BEGIN IMMEDIATE")
    usage.rebuild_days(con)
    con.execute("COMMIT")
    rebuilt = con.execute(sql).fetchall()
    assert [r[:10] + r[11:] for r in kept] == [r[:10] + r[11:] for r in rebuilt]
    assert [r[10] for r in kept] == pytest.approx([r[10] for r in rebuilt], abs=1e-12)


def _expected_days(con, tz: str) -> dict[str, int]:
    """Requests per local day in ``tz``, from model_requests by zoneinfo (no SQLite
    'localtime'): the oracle for the days of the report."""
    out: dict[str, int] = defaultdict(int)
    for (at,) in con.execute("SELECT at FROM model_requests"):
        hour_start = int(at // 3600) * 3600
        out[datetime.fromtimestamp(hour_start, ZoneInfo(tz)).date().isoformat()] += 1
    return dict(out)


def test_another_zone_reads_usage_hours_and_gets_its_own_days(set_tz, spool_home):
    """Rollup made in Tokyo; `spool usage` run in New York (a real subprocess) answers
    with New York's days; a writer in New York then rebuilds the rollup for New York."""
    set_tz("Asia/Tokyo")
    con = _con(spool_home)
    _generate(con, seed=5, sessions=40)
    tokyo = _expected_days(con, "Asia/Tokyo")
    ny = _expected_days(con, "America/New_York")
    assert tokyo != ny
    assert {r["key"]: r["requests"] for r in usage.report(con, "day")["rows"]} == tokyo
    env = dict(os.environ, SPOOL_HOME=str(spool_home), SPOOL_NO_AUTOSTART="1",
               TZ="America/New_York")
    r = subprocess.run([EXE, "usage", "--by", "day", "--json"], env=env, capture_output=True,
                       text=True, check=True)
    assert {x["key"]: x["requests"] for x in json.loads(r.stdout)["rows"]} == ny
    set_tz("America/New_York")
    assert not usage.days_usable(con)
    assert {x["key"]: x["requests"] for x in usage.report(con, "day")["rows"]} == ny
    rng = random.Random(9)
    con.execute("BEGIN IMMEDIATE")
    usage.record_requests(con, [_request(rng, "late", "t0", 1, T0 + 3 * 86400, "/p/one")])
    con.execute("COMMIT")
    assert usage.days_usable(con)
    assert con.execute("SELECT value FROM kv WHERE key = ?", (usage.KV_ZONE,)).fetchone()[0] \
        == usage.zone()
    ny = _expected_days(con, "America/New_York")
    assert {x["key"]: x["requests"] for x in usage.report(con, "day")["rows"]} == ny
    for by in ("day", "month", "model"):
        got, want = _both(con, by, None, None, None)
        assert got == want


def test_an_upgraded_spool_gets_its_history_in_usage_days(set_tz, spool_home):
    """A spool at 0005 with usage: the writer skips the missing rollup, and 0006 backfills
    it from usage_hours in the upgrading process's zone."""
    set_tz("Europe/Paris")
    spool_home.mkdir(parents=True, exist_ok=True)
    path = paths.db_path(spool_home)
    db.upgrade(path, "0005_runs_codex_pid")
    con = sqlite3.connect(path, isolation_level=None)
    _generate(con, seed=7, sessions=30)
    assert "usage_days" not in {n for (n,) in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    before = {by: usage.report(con, by) for by in ("day", "month", "model")}
    con.close()
    db.upgrade(path)
    con = sqlite3.connect(path, isolation_level=None)
    assert usage.days_usable(con)
    assert con.execute("SELECT sum(requests) FROM usage_days").fetchone() == \
        con.execute("SELECT sum(requests) FROM usage_hours").fetchone()
    for by, rep in before.items():
        assert usage.report(con, by) == rep
    db.downgrade(path, "0005_runs_codex_pid")
    assert con.execute("SELECT count(*) FROM kv WHERE key = ?", (usage.KV_ZONE,)).fetchone() \
        == (0,)
