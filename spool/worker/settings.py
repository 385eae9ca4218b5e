"""The worker's settings, from the environment: job intervals, the stop grace, and
whether the optional rollouts job runs (see spool/worker/__init__.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping

from ..config import env_bool, env_number

IMPORT_SWITCH = "SPOOL_IMPORT_ROLLOUTS"  # true: the worker imports hook-less sessions


def _env_seconds(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return env_number(env, name, default, minimum=minimum, unit="seconds")


@dataclass(frozen=True)
class Intervals:
    """Seconds between runs of each job."""

    rollouts: float = 60.0  # the optional job (IMPORT_SWITCH)
    ingest: float = 1.0
    aggregate: float = 1.0
    sweep: float = 30.0
    deliver: float = 1.0
    maintenance: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Intervals":
        env = os.environ if env is None else env
        return cls(**{f.name: _env_seconds(env, f"SPOOL_INTERVAL_{f.name.upper()}", f.default,
                                           0.05) for f in fields(cls)})


def stop_grace(env: Mapping[str, str] | None = None) -> float:
    return _env_seconds(os.environ if env is None else env, "SPOOL_STOP_GRACE", 3.0, 0.0)


def import_rollouts(env: Mapping[str, str] | None = None) -> bool:
    """Whether the rollouts job runs (``SPOOL_IMPORT_ROLLOUTS``, off by default)."""
    return env_bool(os.environ if env is None else env, IMPORT_SWITCH, False)
