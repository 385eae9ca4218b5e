"""Aggregation: parsed raw events -> exact traces, through a transactional outbox.

The I/O edge around the pure builders of spool.trace_build.  One pass, in
short transactions so the hooks waiting on the write lock are never held up
for long:

* spool.aggregate.index       events -> sessions and turns rows (batches planned
                              outside the write lock, applied under it)
* spool.aggregate.passes      the pass loop (``aggregate``, ``sweep``): what is due
* spool.aggregate.session     read one session (events + rollout) and build its traces
* spool.aggregate.write       write a group of built sessions after a re-check
* spool.aggregate.connection  the SQLite connection, transactions, WAL checkpoints
* spool.aggregate.result      AggregateResult, config per cwd
"""
from .index import BUMP_WRITES_SQL, CURSOR, WRITES, bump_writes
from .passes import aggregate, run_pass, sweep
from .result import AggregateResult
from .session import KV_ROLLOUT
from .write import EVENT_TRACES

__all__ = ["AggregateResult", "BUMP_WRITES_SQL", "CURSOR", "EVENT_TRACES", "KV_ROLLOUT", "WRITES",
           "aggregate", "bump_writes", "run_pass", "sweep"]
