"""Runs tasks through the bridge without blocking the host's UI: ``step()`` is called from a UIManager timer
(or in a loop, headless) and never waits; ``cancel()`` cancels the running job.

A ``Task`` is one unit that is done whole or not at all (one timeline clip, one Fusion render): its jobs run
one after the other on the bridge, then its ``finish()`` puts the result into Resolve or Fusion. A task whose
result is already on disk (``cached()``) skips its jobs. A failing task is reported with one line and the next
one starts; a cancel stops everything after the running job has been cancelled.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .plan import AdapterError

__all__ = ["Task", "Runner"]


class Task:
    """One unit of work: ``jobs`` (bridge job dicts, in order), then ``finish()``."""

    def __init__(self, label: str, jobs: list[dict[str, Any]], finish: Callable[[], str] | None = None,
                 cached: Callable[[], bool] | None = None, done: Callable[[], None] | None = None) -> None:
        self.label = label
        self.jobs = list(jobs)
        self._finish = finish
        self._cached = cached
        self._done = done  # called once the jobs ran (before finish): marks the result as rendered

    def cached(self) -> bool:
        return bool(self._cached and self._cached())

    def rendered(self) -> None:
        if self._done is not None:
            self._done()

    def finish(self) -> str:
        return self._finish() if self._finish is not None else ""


class Runner:
    """Steps tasks through the bridge. ``state``: running | done | cancelled; ``results`` and ``errors`` hold
    one line per task finished or failed; ``line`` is the progress line to show."""

    def __init__(self, bridge: Any, tasks: list[Task], error_type: Any = Exception) -> None:
        self.bridge = bridge
        self.tasks = list(tasks)
        self.error_type = error_type  # the client's BridgeError
        self.index = 0
        self.job_index = 0
        self.job_id: str | None = None
        self.state = "running" if self.tasks else "done"
        self.results: list[str] = []
        self.errors: list[str] = []
        self.progress = (0, 0)
        self.line = "Starting..." if self.tasks else "Nothing to do."
        self._cancel = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """Cancel the running job (and every task after it); finished tasks stay as they are."""
        if not self.running:
            return
        self._cancel = True
        if self.job_id is not None:
            try:
                self.bridge.cancel(self.job_id)
            except self.error_type:
                pass
        self.state = "cancelled"
        self.line = f"Cancelled: {len(self.results)} of {len(self.tasks)} done."

    def step(self) -> bool:
        """Do what can be done now without waiting; True while there is more to do."""
        while self.running:
            task = self.tasks[self.index]
            try:
                if self.job_index == 0 and self.job_id is None and task.cached():
                    self.job_index = len(task.jobs)
                if self.job_index < len(task.jobs):
                    if not self._advance_job(task):
                        return True  # a job is running: come back later
                    continue
                task.rendered()
                self.line = f"{task.label}: putting the result in place..."
                self.results.append(task.finish() or f"{task.label}: done")
            except (AdapterError, self.error_type) as err:
                if str(err) == "cancelled":
                    self.state = "cancelled"
                    self.line = f"Cancelled: {len(self.results)} of {len(self.tasks)} done."
                    return False
                self.errors.append(f"{task.label}: {err}")
            self.index += 1
            self.job_index = 0
            self.job_id = None
            if self.index >= len(self.tasks):
                self.state = "done"
                self.line = f"Done: {len(self.results)} of {len(self.tasks)}" + (
                    f", {len(self.errors)} failed" if self.errors else "") + "."
        return False

    def _advance_job(self, task: Task) -> bool:
        """Submit or poll the task's current job; True once it is done (raises on failure)."""
        job = task.jobs[self.job_index]
        if self.job_id is None:
            self.job_id = self.bridge.submit(job)
            self.progress = (0, 0)
        st = self.bridge.status(self.job_id)
        progress = st.get("progress") or {}
        self.progress = (int(progress.get("done", 0)), int(progress.get("total", 0)))
        what = "tracking faces" if job.get("kind") == "track" else "rendering"
        done, total = self.progress
        of = f" ({self.index + 1}/{len(self.tasks)})" if len(self.tasks) > 1 else ""
        self.line = f"{task.label}{of}: {what} {done}/{total or '?'} frames"
        state = st.get("state")
        if state == "failed":
            self.job_id = None
            raise AdapterError(st.get("error") or "the job failed")
        if state == "cancelled":
            self.job_id = None
            raise AdapterError("cancelled")
        if state != "done":
            return False
        self.job_id = None
        self.job_index += 1
        return True

    def run(self, poll_s: float = 0.1, should_cancel: Callable[[], bool] | None = None,
            on_line: Callable[[str], None] | None = None, timeout_s: float | None = None) -> Runner:
        """Step until done (headless use and tests)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.step():
            if on_line is not None:
                on_line(self.line)
            if should_cancel is not None and should_cancel():
                self.cancel()
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise AdapterError(f"gave up after {timeout_s:g} s: {self.line}")
            time.sleep(poll_s)
        return self
