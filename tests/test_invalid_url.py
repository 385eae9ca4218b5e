"""An invalid URL is a configuration problem: one line for `spool test`, a held row with a
visible reason for the worker (never retried forever), for the Infinium and OTLP sinks."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spool import config
from spool.deliver import Dispatcher
from support.delivery import SECRET, add_trace, make_project, outbox

BAD_URLS = ["https://999.999.1.1/api", "https://[::1", "https://127.0.0.1:99999/api"]


def spool_cli(*args, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spool", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


@pytest.mark.parametrize("url", BAD_URLS)
def test_spool_test_with_an_invalid_base_url_says_so_in_one_line(tmp_path, url):
    project = make_project(tmp_path, "https://infinium.example/api")
    r = spool_cli("test", cwd=project, env={"INFINIUM_BASE_URL": url,
                                            "INFINIUM_AGENT_SECRET": SECRET})
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 1 and "Traceback" not in out, out
    assert len(out.splitlines()) == 1 and "not a valid URL" in out and "INFINIUM_BASE_URL" in out


@pytest.mark.parametrize("url", BAD_URLS)
def test_the_worker_holds_a_row_for_an_invalid_base_url_with_the_reason(engine, tmp_path, url,
                                                                         monkeypatch):
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    project = make_project(tmp_path, url)
    add_trace(engine, "t-bad", project=project)
    with Dispatcher(engine) as d:
        d.run_once(2000.0)
        d.run_once(100_000.0)  # a held row is not tried again
    row = outbox(engine, "t-bad")
    assert row["state"] == "held", row
    assert "not a valid URL" in row["held_reason"] and "\n" not in row["held_reason"]


@pytest.mark.parametrize("endpoint", ["https://[::1", "http://999.999.1.1:4318"])
def test_the_worker_holds_a_row_for_an_invalid_otlp_endpoint(engine, tmp_path, endpoint,
                                                              monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    config.write_file(project, {"sinks": ["otlp"]})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    add_trace(engine, "t-otlp", sink="otlp", project=project)
    with Dispatcher(engine) as d:
        d.run_once(2000.0)
    row = outbox(engine, "t-otlp", "otlp")
    assert row["state"] == "held", row
    assert "not a valid URL" in row["held_reason"] and "OTEL_EXPORTER_OTLP_ENDPOINT" in \
        row["held_reason"]
