"""Slow work off the control path: one background thread, results handed back through a queue.

The control loop must not stall on tens of milliseconds of ONNX session setup (a bundle) or an adaptation
step. `Worker.submit` queues a job; the worker thread runs jobs one at a time in submission order (bundles
are installed in the order they arrived) and puts each outcome into `results`, then calls `notify()`. The
owner drains the results on its own control thread (a ROS node passes a guard condition's `trigger` as
`notify`, so its executor runs the drain in the control callback group): nothing the control loop reads is
ever written by the worker thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobResult:
    """The outcome of one job: its `value`, or the exception it raised (`error`)."""

    kind: str  # what the job was, e.g. "bundle" or "adapt"
    value: Any = None
    error: Exception | None = None
    context: Any = None  # what the submitter attached (e.g. the policy an adaptation started from)


class Worker:
    """A daemon thread that runs submitted jobs in order."""

    def __init__(self, notify: Callable[[], None] = lambda: None, name: str = "mbmpo-worker"):
        self.notify = notify
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[], Any], Any] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[JobResult] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, kind: str, job: Callable[[], Any], context: Any = None) -> None:
        with self._lock:
            self._pending += 1
        self._jobs.put((kind, job, context))

    @property
    def busy(self) -> bool:
        """True while a submitted job has not been drained yet."""
        with self._lock:
            return self._pending > 0

    def drain(self) -> list[JobResult]:
        """Every finished result, oldest first (call from the owner's thread)."""
        out: list[JobResult] = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._pending -= len(out)
        return out

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            kind, job, context = item
            try:
                result = JobResult(kind, value=job(), context=context)
            except Exception as err:  # the owner decides; the worker never dies of a job
                result = JobResult(kind, error=err, context=context)
            self._results.put(result)
            try:
                self.notify()
            except Exception:  # a notify after the owner shut down: the result stays queued
                pass
