"""Credentials (spool/credentials.py): env or OS keyring, bound to the base URL."""
from __future__ import annotations

import keyring
import pytest
from keyring.backends import fail

from spool import config, credentials
from spool.errors import SpoolError

from support.delivery import AGENT, MemoryKeyring

URL = "https://platform.i42m.ai/api/v1"


@pytest.fixture
def memkr():
    old = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(old)


@pytest.fixture
def nokr():
    old = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(old)


def cfg(base_url=URL, agent_id=AGENT):
    return config.Config(agent_id=agent_id, base_url=base_url)


def test_store_resolve_delete_bound_to_base_url(memkr):
    credentials.store(AGENT, URL + "/", "keyring-secret-1")
    assert memkr.store == {("spool-infinium", f"{AGENT}@{URL}"): "keyring-secret-1"}
    c = credentials.resolve(cfg(), env={})
    assert (c.agent_id, c.base_url, c.secret, c.source) == (AGENT, URL, "keyring-secret-1",
                                                            "keyring")
    assert "keyring-secret-1" not in repr(c)
    # a config (e.g. found in a parent directory) naming another host gets no secret
    assert credentials.resolve(cfg("https://evil.example/api"), env={}) is None
    assert credentials.delete(AGENT, URL) is True
    assert credentials.delete(AGENT, URL) is False
    assert credentials.resolve(cfg(), env={}) is None


def test_env_secret_wins_and_no_agent_id(memkr):
    credentials.store(AGENT, URL, "keyring-secret-1")
    c = credentials.resolve(cfg(), env={"INFINIUM_AGENT_SECRET": "env-secret-12"})
    assert c.secret == "env-secret-12" and c.source == "env"
    assert credentials.resolve(cfg(agent_id=None), env={"INFINIUM_AGENT_SECRET": "x" * 9}) is None


def test_short_secret_rejected_without_echoing_it(memkr):
    with pytest.raises(SpoolError) as exc:
        credentials.store(AGENT, URL, "short")
    assert "short" not in str(exc.value).replace("shorter", "")
    assert memkr.store == {}


def test_no_keyring_backend_is_a_clear_error_never_plaintext(nokr, spool_home):
    for call in (lambda: credentials.store(AGENT, URL, "a-long-secret-1"),
                 lambda: credentials.resolve(cfg(), env={}),
                 lambda: credentials.delete(AGENT, URL)):
        with pytest.raises(SpoolError) as exc:
            call()
        assert "INFINIUM_AGENT_SECRET" in exc.value.instruction
        assert "a-long-secret-1" not in str(exc.value)
    # the env var still works without a keyring
    assert credentials.resolve(cfg(), env={"INFINIUM_AGENT_SECRET": "env-secret-12"}).secret \
        == "env-secret-12"
    # and nothing was written anywhere under the spool home
    assert not spool_home.exists() or not any(
        b"a-long-secret-1" in p.read_bytes() for p in spool_home.rglob("*") if p.is_file())


def test_a_secret_a_header_cannot_carry_is_refused_without_echoing_it(tmp_path):
    from spool import config
    from spool.credentials import InvalidSecret, resolve

    from support.canary import CANARY_SECRET

    project = tmp_path / "p"
    project.mkdir()
    config.write_file(project, {"agent_id": "agent-1"})
    cfg = config.load(project, env={})
    with pytest.raises(InvalidSecret) as err:
        resolve(cfg, env={"INFINIUM_AGENT_SECRET": CANARY_SECRET + "\r"})
    assert "carriage return" in err.value.reason and CANARY_SECRET not in str(err.value)
