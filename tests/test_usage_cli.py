"""`spool usage` has two ways in (spool/entry.py): the console script's own path
(spool/usage_cmd.py, no Typer) and the Typer app.  These tests prove they take the
same options and answer every command line alike, that the fast path imports only
what the report needs, and that the table fits 80 columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from spool import cli, usage_cmd
from support.usage_data import report_db as _report_db

EXE = str(Path(sys.executable).parent / "spool")


def _env(spool_home: Path) -> dict:
    return dict(os.environ, SPOOL_HOME=str(spool_home), SPOOL_NO_AUTOSTART="1", COLUMNS="80",
                TZ="UTC")


def test_both_ways_declare_the_same_options():
    group = typer.main.get_command(cli.get_app())
    params = group.commands["usage"].params
    typer_values = {o for p in params if not p.is_flag for o in p.opts}
    typer_flags = {o for p in params if p.is_flag for o in p.opts} - {"--help"}
    assert typer_values == set(usage_cmd.VALUE_OPTIONS)
    assert typer_flags == set(usage_cmd.FLAG_OPTIONS)
    # and they fill the same Options fields as Typer's parameter names
    names = {p.opts[0]: p.name for p in params}
    assert {o: names[o] for o in usage_cmd.VALUE_OPTIONS} == usage_cmd.VALUE_OPTIONS
    assert {o: names[o] for o in usage_cmd.FLAG_OPTIONS} == usage_cmd.FLAG_OPTIONS


# (arguments, answered by the fast path?)  The others fall back to Typer by design.
LINES = [
    ([], True),
    (["--json"], True),
    (["--by", "model", "--json"], True),
    (["--by=session"], True),
    (["--by", "month", "--by", "day", "--json"], True),  # the last one wins
    (["--since", "2026-11-10", "--until=2026-11-30", "--json"], True),
    (["--since", "2026-11-30"], True),  # nothing in range
    (["--project", "/p/two", "--by", "session", "--json"], True),
    (["--by", "week"], True),  # exit 2, one line
    (["--since", "2026-13-01"], True),
    (["--since", "2026-11-05", "--until", "2026-11-01"], True),
    (["--by="], True),
    (["--by"], False),  # missing value: Click's error
    (["--nope"], False),
    (["--json=1"], False),
    (["extra"], False),
]


TYPER_ONLY = "import sys; sys.argv[0] = 'spool'; from spool.cli import main; main()"


def test_console_script_and_typer_answer_every_line_alike(engine, spool_home):
    """The installed script (fast path where it parses) against the Typer app alone,
    both real subprocesses: same stdout, stderr and exit code."""
    _report_db(engine)
    env = _env(spool_home)
    codes = set()
    for args, fast in LINES:
        assert (usage_cmd.parse(args) is not None) == fast, args
        mine = subprocess.run([EXE, "usage", *args], env=env, capture_output=True, text=True)
        typer_ = subprocess.run([sys.executable, "-c", TYPER_ONLY, "usage", *args], env=env,
                                capture_output=True, text=True)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (typer_.returncode, typer_.stdout, typer_.stderr), args
        assert "Traceback" not in mine.stderr, args
        codes.add(mine.returncode)
        if fast and mine.returncode == 0 and "--json" in args:
            assert json.loads(mine.stdout)["by"] in usage_cmd.BY
    assert codes == {0, 2}


def test_the_report_path_imports_only_what_it_needs(engine, spool_home):
    """No Typer, click, rich, SQLAlchemy, orjson, platformdirs... on `spool usage`:
    each of those is start-up time the report does not use."""
    _report_db(engine)
    probe = ("import sys; sys.argv = ['spool', 'usage'] + sys.argv[1:]\n"
             "import spool.entry\n"
             "try:\n spool.entry.main()\nexcept SystemExit as x:\n code = x.code\n"
             "print('\\nMODULES', code, ' '.join(sorted(sys.modules)))")
    heavy = {"typer", "click", "rich", "sqlalchemy", "alembic", "orjson", "platformdirs",
             "pydantic", "genai_prices", "httpx", "keyring", "tempfile", "shutil",
             "dataclasses", "inspect", "typing", "uuid", "json"}
    for args in (["--by", "day"], ["--by", "session", "--since", "2026-11-01"], ["--json"]):
        r = subprocess.run([sys.executable, "-c", probe, *args], env=_env(spool_home),
                           capture_output=True, text=True)
        code, *mods = r.stdout.rsplit("MODULES", 1)[1].split()
        assert code == "0", r.stdout + r.stderr
        loaded = set(mods)
        ok = heavy - {"json"} if "--json" in args else heavy
        assert not ok & loaded, (args, sorted(ok & loaded))
        assert {m for m in loaded if m.startswith("spool")} == {
            "spool", "spool.entry", "spool.errors", "spool.paths", "spool.usage",
            "spool.usage_cmd"}, args


def _row(key, n, models):
    return {"key": key, "requests": 1, "input": n, "cached": n // 2, "cache_write": 0,
            "output": n // 10, "reasoning": n // 20, "total": n + n // 10,
            "cost_usd": n / 1e6, "unpriced": 0, "models": models}


@pytest.mark.parametrize("by, key, models", [
    ("day", "2026-11-29", ["gpt-5"]),
    ("session", "019a8c3e-2b9f-7c11-a0c4-5d3e9f0b1a2c", ["gpt-5"]),
    ("model", "gpt-5.1-codex-max", ["gpt-5.1-codex-max", "gpt-5-mini", "o3", "gpt-4.1"]),
])
def test_table_fits_80_columns_and_folds_long_keys_and_models(by, key, models):
    rows = [_row(key, 987_654_321, models), _row("k2", 12, ["gpt-5"])]
    rep = {"by": by, "rows": rows, "totals": _row("total", 987_654_333, models),
           "unpriced_models": []}
    lines = usage_cmd.table_lines(rep)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == [by])
    assert set(lines[head + 1].strip()) == {"\u2500"}
    k2 = next(i for i, line in enumerate(lines) if line.split()[:1] == ["k2"])
    record = lines[head + 2:k2]  # the first row, folded onto one line or more
    kw = len(record[0].split()[0])  # the key column's width when the key folds
    assert "".join(line[1:1 + kw].strip() for line in record) == key
    rest = " ".join(line[1 + kw:] for line in record).split()
    nums = ["987,654,321", "493,827,160", "98,765,432", "49,382,716", "$987.65"]
    assert rest[:5] == nums, lines
    assert "".join(rest[5:]) == "".join(", ".join(models).split())
    total = next(i for i, line in enumerate(lines) if line.split()[:1] == ["total"])
    assert "987,654,333" in lines[total] and total > k2
    assert set(lines[total - 1].strip()) == {"\u2500"}  # a rule above the totals


@pytest.mark.parametrize("n", [0, 1, 3])
def test_json_is_the_report_one_row_per_line(n):
    rows = [_row(f"2026-11-{d:02d}", 1000 * d, ["gpt-5", "o3"]) for d in range(1, n + 1)]
    rep = {"by": "day", "rows": rows, "totals": _row("total", 6000, ["gpt-5", "o3"]),
           "unpriced_models": ["gpt-fake"] if n else []}
    text = usage_cmd.json_text(rep)
    assert json.loads(text) == rep
    assert text.endswith("}\n") and list(json.loads(text)) == sorted(rep)
    lines = text.splitlines()
    assert [json.loads(line.strip().rstrip(",")) for line in lines[3:3 + n]] == rows


def test_python_dash_m_spool_enters_as_the_console_script(engine, spool_home):
    _report_db(engine)
    probe = ("import runpy, sys; sys.argv = ['spool', 'usage', '--json']\n"
             "try:\n runpy.run_module('spool', run_name='__main__')\n"
             "except SystemExit as x:\n"
             " print('\\nTYPER' if 'typer' in sys.modules else '\\nNO-TYPER', x.code)")
    r = subprocess.run([sys.executable, "-c", probe], env=_env(spool_home), capture_output=True,
                       text=True)
    out, verdict = r.stdout.rsplit("\n", 2)[0], r.stdout.split()[-2:]
    assert verdict == ["NO-TYPER", "0"], r.stdout + r.stderr
    assert json.loads(out)["totals"]["requests"] == 5
