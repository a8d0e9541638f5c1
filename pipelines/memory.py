"""Where a run's memory goes: the resident set sampled while `flywheel run` works, and its peak in each step.

    with RssSampler() as sampler:
        result = job.execute_in_process(...)
    peaks = peak_by_step(sampler.samples, step_windows(instance, result.run_id))

The in-process executor runs one step at a time, so the peak RSS seen inside a step's window is that step's
(plus whatever earlier steps left behind: a jump between two steps' peaks is what the later one added or kept).
A spike shorter than the sampling interval is not missed: each sample also reads the kernel's high-water mark
(getrusage's ru_maxrss), and a step during which it rose peaked at least there.
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
        self.samples: list[tuple[float, int, int]] = []   # (unix time, RSS bytes, high-water mark bytes)
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

    @staticmethod
    def high_water() -> int:
        """This process's peak RSS so far, as the kernel counts it (ru_maxrss: KiB on Linux)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def sample(self) -> tuple[float, int, int]:
        return time.time(), self.rss(), self.high_water()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, name="flywheel-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.samples.append(self.sample())

    @property
    def peak(self) -> int:
        return max((max(b, hwm) for _, b, hwm in self.samples), default=0)


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


def peak_by_step(samples: Iterable[tuple[float, int, int]], windows: dict[str, tuple[float, float]]) -> dict[str, int]:
    """{step: the largest RSS sample (bytes) inside its window, or the high-water mark where it rose during the
    window (a spike between two samples)}; a step too short for any sample gets the sample nearest its end."""
    ordered = sorted(samples)
    peaks: dict[str, int] = {}
    for step, (start, end) in windows.items():
        inside = [s for s in ordered if start <= s[0] <= end]
        if not inside and ordered:
            inside = [min(ordered, key=lambda s: abs(s[0] - end))]
        if not inside:
            continue
        before = [s[2] for s in ordered if s[0] < start]
        rose = inside[-1][2] if inside[-1][2] > (before[-1] if before else 0) else 0
        peaks[step] = max(max(b for _, b, _ in inside), rose)
    return peaks
