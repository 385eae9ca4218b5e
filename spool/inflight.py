"""The request a dispatcher has in flight: a batch request sent on a helper thread while the
dispatcher (spool.deliver) claims and renders the next one.

At most one request is in flight per dispatcher: :meth:`Flight.send` first lands the one
before (waits for its answer and settles it), so a sink's HTTP client is never used by two
threads at once and requests go out in the order they were made.  Settling (the attempt
recorded, the rows acknowledged) always runs on the dispatcher's thread: the helper thread
only calls the sink's ``send_batch`` and never touches the database.  An exception from the
sink becomes an :class:`~spool.retry.Outcome` (:func:`attempt`), as on the dispatcher's own
thread, so no row is lost and every attempt is recorded.  :meth:`Flight.close` (the end of a
pass, also on an error) lands what is left and stops the thread: no request outlives a pass.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

from .errors import SpoolError
from .retry import Outcome

MAX_MESSAGE = 1000
Rows = TypeVar("Rows")
# settle(rows, outcome, started, seconds, finished): finished None = "now" (a wait in place)
Settle = Callable[[Rows, Outcome, float, float, "float | None"], None]


def attempt(call: Callable[[], Outcome]) -> tuple[Outcome, float]:
    """``call()`` (one send) and its duration in seconds; a sink's exception is an outcome:
    ``SpoolError`` -> held with its message, anything else -> retried (``SinkError:<type>``)."""
    t0 = time.perf_counter()
    try:
        outcome = call()
    except SpoolError as exc:
        outcome = Outcome(kind="held", error_class="SpoolError", message=str(exc),
                          attempted=False)
    except Exception as exc:  # noqa: BLE001 - a sink bug must not lose the rows
        outcome = Outcome(kind="retry", error_class=f"SinkError:{type(exc).__name__}",
                          message=str(exc)[:MAX_MESSAGE])
    return outcome, time.perf_counter() - t0


class Flight(Generic[Rows]):
    """The dispatcher's one request in flight (see the module doc).  ``settle`` records a
    request's outcome for its rows; it is only ever called on the thread that owns this."""

    def __init__(self, settle: Settle) -> None:
        self._settle = settle
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Rows, float, Future] | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def send(self, rows: Rows, started: float, call: Callable[[], Outcome], *,
             wait: bool) -> None:
        """Land the request in flight, then send ``call`` for ``rows``: here, settled at once
        (``wait``: nothing else to prepare meanwhile), or on the helper thread, landed by the
        next :meth:`send`, :meth:`land` or :meth:`close`.  ``started`` is the attempt's time."""
        self.land()
        if wait:
            outcome, seconds = attempt(call)
            self._settle(rows, outcome, started, seconds, None)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-send")
        self._pending = (rows, started, self._pool.submit(attempt, call))

    def land(self) -> None:
        """Wait for the request in flight (at most the sink's timeout) and settle it."""
        if self._pending is None:
            return
        rows, started, future = self._pending
        self._pending = None
        outcome, seconds = future.result()  # attempt() never raises
        self._settle(rows, outcome, started, seconds, started + seconds)

    def close(self) -> None:
        try:
            self.land()
        finally:
            self._pending = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
