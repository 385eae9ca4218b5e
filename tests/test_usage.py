"""Per-request usage storage and `spool usage` (spool.usage, spool/commands/usage.py)."""
from __future__ import annotations

import json
import sqlite3
from datetime import date

import orjson
import pytest
from typer.testing import CliRunner

from spool import cli, cost, db, usage
from spool.trace import Limits, SessionFacts
from spool.trace_build import build_part, build_turn_trace

from support.usage_data import DAY1, ONE
from support.usage_data import events as _events
from support.usage_data import report_db as _report_db
from support.usage_data import session as _session
from support.usage_data import write as _write

def _con(engine):
    return engine.raw_connection().driver_connection


def _q(engine, sql):
    with db.read(engine) as conn:
        return conn.exec_driver_sql(sql).fetchall()


def test_turns_and_their_summary_count_each_request_once(engine):
    turns, summary = _session("s1", DAY1, [["gpt-5", "gpt-5"], ["gpt-5"]])
    assert _write(engine, turns) == 3
    assert _write(engine, [summary]) == 0  # the same requests: nothing changes
    assert _write(engine, [orjson.dumps(b) for b in turns]) == 0  # JSON bodies too
    assert _q(engine, "SELECT count(*), sum(input), sum(cached), sum(output), sum(reasoning)"
                      " FROM model_requests") == [(3, 6000, 3000, 300, 120)]
    assert _q(engine, "SELECT sum(requests), sum(input), sum(total), round(sum(cost_usd), 9),"
                      " sum(unpriced) FROM usage_hours") == [(3, 6000, 6300, round(3 * ONE, 9), 0)]


def test_summary_alone_records_the_requests(engine):
    """Session granularity: only summaries are traced."""
    _, summary = _session("s1", DAY1, [["gpt-5"], ["gpt-5", "gpt-fake"]])
    assert _write(engine, [summary]) == 3
    assert _q(engine, "SELECT turn_id, seq, model, cost_usd IS NULL FROM model_requests"
                      " ORDER BY turn_id, seq") == [
        ("s1-t0", 1, "gpt-5", 0), ("s1-t1", 1, "gpt-5", 0), ("s1-t1", 2, "gpt-fake", 1)]


def test_a_revision_replaces_the_rows_and_the_hourly_sums(engine):
    turns, _ = _session("s1", DAY1, [["gpt-5"]])
    _write(engine, turns)
    revised = json.loads(json.dumps(turns[0]))
    step = next(s for s in revised["steps"] if s["action"] == "model_request")
    step["usage"]["output"] = 500
    step["cost_usd"] = cost.price_request(step["usage"], "gpt-5", step["started_at"]).usd
    assert _write(engine, [revised]) == 1
    assert _q(engine, "SELECT requests, output, round(cost_usd, 9) FROM usage_hours") == [
        (1, 500, round(step["cost_usd"], 9))]


def test_rollout_only_turn_is_one_row_until_hook_usage_arrives(engine):
    facts = SessionFacts("s1", project="/p")
    part = build_part("t0", _events("t0", DAY1, ["gpt-5"], usage=False), Limits())
    body = build_turn_trace(facts, part).to_dict()
    body["usage"] = {"input": 4000, "cached": 0, "cache_write": 0, "output": 10,
                     "reasoning": 0, "total": 4010, "requests": 1}
    body["usage_source"] = "rollout"
    body["environment"]["model"] = "gpt-5"
    _write(engine, [cost.add_cost(body)])
    assert _q(engine, "SELECT seq, input, cost_usd > 0 FROM model_requests") == [(0, 4000, 1)]
    turns, _ = _session("s1", DAY1, [["gpt-5"]], project="/p")
    for b in turns:  # same session and turn id as above
        b["turn_id"] = "t0"
        for s in b["steps"]:
            s["turn_id"] = "t0"
    _write(engine, turns)
    assert _q(engine, "SELECT seq, input FROM model_requests") == [(1, 2000)]
    assert _q(engine, "SELECT sum(requests), sum(input) FROM usage_hours") == [(1, 2000)]


def test_report_groups_totals_and_partial_cost(engine):
    _report_db(engine)
    raw = engine.raw_connection()
    conn = raw.driver_connection
    by_model = usage.report(conn, "model")
    by_session = usage.report(conn, "session")
    by_day = usage.report(conn, "day")
    by_month = usage.report(conn, "month")
    two = usage.report(conn, "session", project="/p/two")
    late = usage.report(conn, "session", since=date(2026, 11, 10))
    early = usage.report(conn, "session", until=date(2026, 11, 10))
    raw.close()
    rows = {r["key"]: r for r in by_model["rows"]}
    assert rows["gpt-5"]["requests"] == 3 and rows["gpt-5"]["cost_usd"] == pytest.approx(3 * ONE)
    assert rows["gpt-fake"]["cost_usd"] is None and rows["gpt-fake"]["unpriced"] == 2
    assert by_model["unpriced_models"] == ["gpt-fake"]
    t = by_model["totals"]
    assert (t["requests"], t["input"], t["cached"], t["output"], t["reasoning"], t["unpriced"]) \
        == (5, 10000, 5000, 500, 200, 2)
    assert t["cost_usd"] == pytest.approx(3 * ONE)
    assert [r["key"] for r in by_session["rows"]] == ["s1", "s2", "s3"]
    s2 = by_session["rows"][1]
    assert s2["cost_usd"] == pytest.approx(ONE) and s2["unpriced"] == 1  # partial
    assert s2["models"] == ["gpt-5", "gpt-fake"]
    assert by_session["rows"][2]["cost_usd"] is None
    assert [r["requests"] for r in by_day["rows"]] == [2, 3]
    assert [r["key"] for r in by_month["rows"]] == ["2026-11"]
    assert [r["key"] for r in two["rows"]] == ["s2", "s3"]
    assert [r["key"] for r in late["rows"]] == ["s2", "s3"]
    assert [r["key"] for r in early["rows"]] == ["s1"]


def test_session_and_trace_costs(engine):
    turns, summary = _session("s1", DAY1, [["gpt-5"], ["gpt-fake"]])
    _write(engine, turns)
    with db.write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO traces (trace_id, kind, session_id, name, created_at, body)"
            " VALUES (?, 'turn', 's1', 'x', 0, ?)", (turns[0]["trace_id"], json.dumps(turns[0])))
        conn.exec_driver_sql(
            "INSERT INTO traces (trace_id, kind, session_id, name, created_at, body)"
            " VALUES ('broken', 'turn', 's1', 'x', 0, '{not json')")
    with db.read(engine) as conn:
        sc = usage.session_costs(conn, ["s1", "nope"])
        tc = usage.trace_costs(conn, [turns[0]["trace_id"], "broken"])
    assert sc == {"s1": {"cost_usd": pytest.approx(ONE), "unpriced": 1, "total": 4200}}
    assert tc[turns[0]["trace_id"]] == {"cost_usd": pytest.approx(ONE), "cost_flags": []}
    assert tc["broken"] == {"cost_usd": None, "cost_flags": []}


def test_migration_backfills_from_stored_traces(tmp_path):
    path = tmp_path / "old.db"
    db.upgrade(path, "0002_drop_ix_outbox_trace")
    turns, summary = _session("s1", DAY1, [["gpt-5"], ["gpt-5", "gpt-fake"]])
    for b in turns + [summary]:
        b.pop("cost_usd"), b.pop("cost_flags")  # bodies from before cost existed
        for s in b["steps"]:
            s.pop("cost_usd", None)
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO traces (trace_id, kind, session_id, name, created_at, body)"
                    " VALUES (?, ?, ?, 'x', 0, ?)",
                    [(b["trace_id"], b["kind"], "s1", json.dumps(b)) for b in turns + [summary]])
    con.commit()
    db.upgrade(path)
    assert con.execute("SELECT count(*), sum(cost_usd IS NULL), round(sum(cost_usd), 9)"
                       " FROM model_requests").fetchall() == [(3, 1, round(2 * ONE, 9))]
    assert con.execute("SELECT sum(requests), sum(unpriced) FROM usage_hours").fetchall() \
        == [(3, 1)]
    con.close()


def test_usage_command_table_fits_80_columns_and_json(engine, monkeypatch):
    _report_db(engine)
    runner = CliRunner()
    app = cli.get_app()
    for by in ("day", "month", "session", "model"):
        r = runner.invoke(app, ["usage", "--by", by])
        assert r.exit_code == 0, r.output
        lines = r.output.splitlines()
        assert max(len(line) for line in lines) <= 80, r.output
        assert any(line.lstrip("│┃ ").startswith("total") for line in lines), r.output
        assert "* partial: 2 request(s) not priced (no price for model gpt-fake)" in r.output
    r = runner.invoke(app, ["usage", "--by", "model", "--json", "--since", "2026-11-10"])
    data = json.loads(r.output)
    assert data["totals"]["requests"] == 3 and data["totals"]["cost_usd"] == pytest.approx(ONE)


@pytest.mark.parametrize("args, message", [
    (["--by", "week"], "--by 'week' is not one of day, month, session, model"),
    (["--since", "2026-13-01"], "--since '2026-13-01' is not a date"),
    (["--since", "2026-11-05", "--until", "2026-11-01"], "is after --until"),
])
def test_usage_bad_input_is_one_line_exit_2(args, message):
    r = CliRunner().invoke(cli.get_app(), ["usage", *args])
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output


def test_usage_on_a_fresh_spool_creates_it_and_says_so(spool_home):
    from spool import paths

    assert not paths.db_path().exists()
    r = CliRunner().invoke(cli.get_app(), ["usage"])
    assert r.exit_code == 0 and r.output.strip() == "No model requests recorded yet."
    assert paths.db_path().exists()


def test_console_script_answers_usage_without_typer(engine, spool_home):
    """`spool usage` through the installed script (spool/entry.py's fast path)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _report_db(engine)
    exe = str(Path(sys.executable).parent / "spool")
    env = dict(os.environ, SPOOL_HOME=str(spool_home))
    probe = ("import sys, runpy; sys.argv = ['spool', 'usage', '--json', '--by', 'model'];"
             "import spool.entry as e;"
             "\ntry:\n e.main()\nexcept SystemExit as x:\n"
             " print('TYPER' if 'typer' in sys.modules else 'NO-TYPER', x.code)")
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert r.stdout.rstrip().endswith("NO-TYPER 0"), r.stdout + r.stderr
    r = subprocess.run([exe, "usage", "--by=model", "--json"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["totals"]["requests"] == 5
    r = subprocess.run([exe, "usage", "--until", "soon"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "Error: --until 'soon' is not a date. Pass YYYY-MM-DD, e.g. --until 2026-11-01."]
    r = subprocess.run([exe, "usage", "--help"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "--since" in r.stdout  # Typer's help


def test_history_and_sessions_show_cost_in_80_columns_and_json(engine, monkeypatch):
    from support.queries import add_session, add_trace

    turns, _ = _session("019abcde-1111-7222-8333-444455556666", DAY1, [["gpt-5"], ["gpt-fake"]])
    sid = turns[0]["session_id"]
    _write(engine, turns)
    add_session(engine, sid, last=DAY1 + 500, project="/home/dev/a-rather-long-project-name")
    for k, b in enumerate(turns):
        add_trace(engine, b["trace_id"], created_at=DAY1 + k, session_id=sid, body=b,
                  name="please refactor the delivery module so that it fits on one screen")
    monkeypatch.setenv("COLUMNS", "80")
    runner, app = CliRunner(), cli.get_app()
    one = f"${ONE:.4f}"
    r = runner.invoke(app, ["history"])
    assert r.exit_code == 0 and max(map(len, r.output.splitlines())) <= 80, r.output
    assert one in r.output and "n/a" in r.output, r.output
    rows = {x["trace_id"]: x for x in json.loads(runner.invoke(app, ["history", "--json"]).output)}
    assert rows[turns[0]["trace_id"]]["cost_usd"] == turns[0]["cost_usd"] == pytest.approx(ONE)
    assert rows[turns[1]["trace_id"]]["cost_usd"] is None  # unknown model: null, never 0
    assert rows[turns[1]["trace_id"]]["cost_flags"] == ["no price for model gpt-fake"]
    r = runner.invoke(app, ["sessions"])
    assert r.exit_code == 0 and max(map(len, r.output.splitlines())) <= 80, r.output
    assert f"cost {one}*" in r.output, r.output  # partly priced: one request was not
    (row,) = json.loads(runner.invoke(app, ["sessions", "--json"]).output)
    assert row["cost_usd"] == pytest.approx(ONE) and row["unpriced"] == 1
