"""Where a run's memory goes: the resident set sampled while `flywheel run` works, and its peak in each step.

    with RssSampler() as sampler:
        result = job.execute_in_process(...)
    peaks = peak_by_step(sampler.samples, step_windows(instance, result.run_id))

The in-process executor runs one step at a time, so the peak RSS seen inside a step's window is that step's
(plus whatever earlier steps left behind: a jump between two steps' peaks is what the later one added or kept).
`flywheel run` prints the peaks beside the stage seconds and writes them to `<home>/reports/stage_memory.json`;
`/usr/bin/time -v` gives the same process's overall peak ("Maximum resident set size").
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class RssSampler:
    """Samples this process's resident set size (with its children's) every `interval_s` in a daemon thread."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []   # (unix time, bytes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        import psutil

        process = psutil.Process()
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:   # a child that ended between the listing and the reading
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.rss()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, name="flywheel-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.samples.append((time.time(), self.rss()))

    @property
    def peak(self) -> int:
        return max((b for _, b in self.samples), default=0)


def step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """{step key: (start, end) unix times} of every step of a run that started, from the instance's event log."""
    started, windows = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in started:
            windows[event.step_key] = (started[event.step_key], entry.timestamp)
    return windows


def peak_by_step(samples: Iterable[tuple[float, int]], windows: dict[str, tuple[float, float]]) -> dict[str, int]:
    """{step: the largest sample (bytes) taken inside its window}; a step too short for any sample gets the
    sample nearest its end, so every step has a figure."""
    ordered = sorted(samples)
    peaks: dict[str, int] = {}
    for step, (start, end) in windows.items():
        inside = [b for t, b in ordered if start <= t <= end]
        if not inside and ordered:
            inside = [min(ordered, key=lambda s: abs(s[0] - end))[1]]
        if inside:
            peaks[step] = max(inside)
    return peaks


def format_mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"
