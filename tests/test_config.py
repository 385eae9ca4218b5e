"""Project config: found by walking up, env on top, never the secret."""
from __future__ import annotations

import stat

import pytest

from spool import config
from spool.errors import SpoolError


def test_found_by_walking_up_with_env_on_top(tmp_path):
    project = tmp_path / "proj"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    config.write_file(project, {"agent_id": "agent-1", "granularity": "both"})
    cfg = config.load(deep, env={})
    assert (cfg.project, cfg.agent_id, cfg.granularity) == (project.resolve(), "agent-1", "both")
    assert cfg.source.endswith(".spool/config.json")
    assert cfg.effective_sinks() == ("infinium",)
    env = {"INFINIUM_AGENT_ID": "agent-2", "CONNECTOR_SESSION_TTL": "5",
           "CONNECTOR_MAX_INPUT_PREVIEW": "50", "INFINIUM_VERIFY_SSL": "false"}
    cfg = config.load(deep, env=env)
    assert (cfg.agent_id, cfg.session_ttl, cfg.max_input_preview, cfg.verify_ssl) == (
        "agent-2", 5.0, 50, False)


def test_defaults_without_a_project(tmp_path):
    cfg = config.load(tmp_path, env={})
    assert (cfg.project, cfg.source, cfg.granularity, cfg.session_ttl) == (None, "defaults", "turn", 600.0)
    assert cfg.effective_sinks() == ("file",)


@pytest.mark.parametrize("stop,end,expected", [
    ("true", "true", "both"), ("false", "true", "session"), ("true", "false", "turn"),
    ("1", None, "turn"), (None, "yes", "both"),
])
def test_connector_flush_flags_map_onto_granularity(tmp_path, stop, end, expected):
    env = {}
    if stop is not None:
        env["CONNECTOR_FLUSH_ON_STOP"] = stop
    if end is not None:
        env["CONNECTOR_FLUSH_ON_SESSION_END"] = end
    assert config.load(tmp_path, env=env).granularity == expected


def test_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(SpoolError) as e:
        config.load(tmp_path, env={"CONNECTOR_SESSION_TTL": "soon"})
    assert "CONNECTOR_SESSION_TTL" in e.value.reason and e.value.instruction
    with pytest.raises(SpoolError) as e:
        config.load(tmp_path, env={"SPOOL_GRANULARITY": "hourly"})
    assert "SPOOL_GRANULARITY" in e.value.reason
    (tmp_path / ".spool").mkdir()
    (tmp_path / ".spool" / "config.json").write_text("{oops")
    with pytest.raises(SpoolError) as e:
        config.load(tmp_path, env={})
    assert "spool init" in e.value.instruction


def test_file_is_private_and_refuses_secrets(tmp_path):
    path = config.write_file(tmp_path, {"agent_id": "a"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ValueError):
        config.write_file(tmp_path, {"agent_id": "a", "agent_secret": "s3cret"})
    assert "s3cret" not in path.read_text()
