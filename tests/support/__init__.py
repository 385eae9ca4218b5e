"""Helpers shared by the test modules (no tests here; fixtures live in tests/conftest.py).

One noun per module; test modules import from here, never from each other:

- ``recorded``: the recorded Codex 0.169.0 session (payloads, rollout), Codex-like sessions.
- ``hookproc``: the hook as `spool init` installs it, run as a real subprocess.
- ``canary``: the canary secret every test uses, and the grep for it on disk.
- ``waiting``: ``wait_until`` (poll with a deadline; the only way tests synchronise).
- ``rows``: raw events into a test database and rows read back out of it.
- ``delivery``: traces + outbox rows, a sink project config, an in-memory keyring.
- ``queries``: rows for the read-query tests (sessions, attempts, errors, quarantine).
- ``sessions``: the recorded session replayed into a project; aggregation invariants.
- ``workers``: find, start and always kill real `spool worker` processes.
- ``codex``: the real Codex CLI offline (isolated CODEX_HOME, runner, network namespace).
- ``fake_model``: the scripted fake OpenAI Responses server Codex talks to.
- ``cli``: the installed `spool` script run as a user runs it; its one-line errors.
- ``e2e``: the end-to-end scenario (prompts, script, rollout reader, spool CLI helpers).
- ``otlp_receiver``: a real OTLP/HTTP receiver on loopback.
- ``phoenix``: a real Arize Phoenix on loopback.
- ``atif``: Harbor's ATIF validator.
- ``ui``: a spool filled by a recorded session and a live `spool ui` server.
- ``usage_data``: priced sessions recorded through spool.usage for the `spool usage` tests.
"""
