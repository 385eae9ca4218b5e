"""What one aggregation pass did (AggregateResult), and the config per cwd it used."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from .. import config as config_mod
from ..errors import SpoolError


@dataclass
class AggregateResult:
    indexed: int = 0
    turn_traces: int = 0
    session_traces: int = 0
    sessions_finalised: int = 0
    late_events: int = 0
    conflicts: int = 0  # work dropped because events arrived or another pass did it
    errors: int = 0
    trace_ids: list[str] = field(default_factory=list)
    # Not a field (the worker reads any non-zero field as "did work"): the
    # longest write transaction of the pass (BEGIN IMMEDIATE to COMMIT: the
    # time others wait for the write lock at most), and the longest WAL
    # checkpoint run after one (it does not hold the write lock), for the benchmark.
    max_write_ms = 0.0
    max_checkpoint_ms = 0.0

    @property
    def traces(self) -> int:
        return self.turn_traces + self.session_traces

    def add(self, other: "AggregateResult") -> None:
        for name in ("indexed", "turn_traces", "session_traces", "sessions_finalised",
                     "late_events", "conflicts", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.trace_ids.extend(other.trace_ids)
        self.max_write_ms = max(self.max_write_ms, other.max_write_ms)
        self.max_checkpoint_ms = max(self.max_checkpoint_ms, other.max_checkpoint_ms)


class Configs:
    """``config.load`` per cwd, cached for one pass."""

    def __init__(self, env: Mapping[str, str] | None):
        self.env = os.environ if env is None else env
        self._cache: dict[str | None, config_mod.Config] = {}

    def get(self, cwd: str | None) -> config_mod.Config:
        cfg = self._cache.get(cwd)
        if cfg is None:
            try:
                cfg = config_mod.load(cwd, self.env)
            except SpoolError:
                try:  # a broken project file: the environment and defaults still apply
                    cfg = config_mod.load(None, self.env)
                except SpoolError:
                    cfg = config_mod.Config()
            self._cache[cwd] = cfg
        return cfg

    def project(self, cwd: str | None) -> str | None:
        cfg = self.get(cwd)
        return str(cfg.project) if cfg.project is not None else cwd
