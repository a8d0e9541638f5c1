import time

import dagster as dg

from pipelines.memory import RssSampler, peak_by_step, step_windows


def test_each_step_gets_the_largest_sample_inside_its_window():
    samples = [(0.0, 100, 100), (1.0, 300, 300), (2.0, 200, 300), (3.0, 900, 900), (4.0, 400, 900)]
    peaks = peak_by_step(samples, {"a": (0.5, 2.5), "b": (2.5, 4.0)})
    assert peaks == {"a": 300, "b": 900}


def test_a_spike_between_two_samples_is_the_step_s_peak_through_the_high_water_mark():
    # RSS is sampled at 200 then 250, but the kernel's high-water mark rose to 1000 in between: a spike
    samples = [(0.0, 200, 300), (1.0, 200, 300), (2.0, 250, 1000), (3.0, 260, 1000), (4.0, 240, 1000)]
    peaks = peak_by_step(samples, {"quiet": (0.5, 1.5), "spiky": (1.5, 2.5), "after": (2.5, 4.0)})
    assert peaks == {"quiet": 200, "spiky": 1000, "after": 260}   # the mark stayed up; only the rise counts


def test_a_step_shorter_than_the_sampling_interval_gets_the_sample_nearest_its_end():
    samples = [(0.0, 100, 100), (1.0, 300, 300)]
    assert peak_by_step(samples, {"quick": (0.85, 0.9)}) == {"quick": 300}
    assert peak_by_step([], {"quick": (0.0, 1.0)}) == {}


def test_the_sampler_sees_memory_that_a_step_allocates_and_frees():
    with RssSampler(interval_s=0.02) as sampler:
        time.sleep(0.1)
        before = sampler.rss()
        block = bytearray(200 * 2**20)   # 200 MiB, touched so that it is resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.2)
        del block
        time.sleep(0.1)
    assert sampler.peak >= before + 150 * 2**20
    assert sampler.samples[-1][1] < sampler.peak
    assert sampler.samples[-1][2] >= sampler.peak - 2**20   # the high-water mark keeps the spike


def test_step_windows_come_from_the_run_s_event_log():
    @dg.asset
    def slow():
        time.sleep(0.3)
        return 1

    @dg.asset
    def after(slow):
        return slow + 1

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([slow, after], instance=instance)
    windows = step_windows(instance, result.run_id)
    assert set(windows) == {"slow", "after"}
    assert windows["slow"][1] - windows["slow"][0] >= 0.3
    assert windows["slow"][1] <= windows["after"][0]
