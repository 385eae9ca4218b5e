"""Everything spool knows about the Codex CLI's own files and processes.

* binary.py: the ``codex`` binary (``--codex-bin`` or PATH) and its version;
* hooks_json.py: ``<project>/.codex/hooks.json`` (or the user layer's
  ``$CODEX_HOME/hooks.json``) and spool's hook command in it;
* config_toml.py: ``$CODEX_HOME/config.toml`` (feature flag, project trust,
  ``hooks.state`` trust entries);
* app_server.py: a JSON-RPC client for ``codex app-server``;
* trust.py: trusting spool's own hooks (never another tool's) through it.

Facts this relies on (Codex 0.169.0): a project's ``.codex/hooks.json`` is not
loaded until the project is trusted; an untrusted hook is skipped silently;
the trust key is ``<hooks.json path>:<event_snake_case>:<group>:<handler>``
and the hash covers command, timeout and matcher.

The names below are re-exported so ``from spool import codex as cx;
cx.install_hooks(...)`` keeps working; new code may import the submodules.
"""
from __future__ import annotations

# ruff: noqa: F401  (re-exports)

from .app_server import AppServer, AppServerError
from .binary import (INSTALL_HINT, MIN_HOOK_TRUST_VERSION, codex_version, find_codex,
                     version_tuple)
from .config_toml import (codex_home, config_toml, ensure_feature_flag, feature_flag,
                          hooks_state, project_trust, read_toml, remove_trust_entries)
from .hooks_json import (CLAMPED_EVENTS, CLAMPED_TIMEOUT_S, EVENTS, HOOK_TIMEOUT_S,
                         MATCHER_EVENTS, HooksChange, HooksRemoval, Unmerged, dump_hooks,
                         hook_command, hooks_path, install_hooks, is_spool_command,
                         merge_hooks, read_hooks, snake, spool_group, spool_positions,
                         trust_key, uninstall_hooks, unmerge_hooks, user_hooks_path,
                         write_codex_file)
from .trust import TrustResult, spool_listed, trust_spool_hooks

