"""Tier 1: the promotion rule on fixed per-query scores."""
import pandas as pd
import pytest

from assets.promotion import champion_vetting
from assets.promotion.gate import GateSettings, decide, paired_scores

FAST = GateSettings(resamples=2000)


def frame(values, query_set="human/x/test"):
    return pd.DataFrame({"query_set": query_set, "qid": [f"q{i}" for i in range(len(values))], "ndcg@10": values})


def test_a_consistent_gain_is_promoted_and_the_reason_gives_the_numbers():
    result = decide(frame([0.6] * 30), frame([0.4] * 15 + [0.5] * 15), None, None, FAST)
    assert result.promote
    assert result.gate["ci95"][0] > 0 and result.gate["delta_ndcg@10"] == pytest.approx(0.15)
    assert result.reason.startswith("promoted:") and "95% CI" in result.reason


def test_a_gain_inside_the_noise_is_not_promoted():
    cand = frame([0.9, 0.1] * 15)
    champ = frame([0.1, 0.85] * 15)   # mean gain +0.025, but half the queries lose 0.75
    result = decide(cand, champ, None, None, FAST)
    assert not result.promote
    assert result.gate["delta_ndcg@10"] > 0 and result.gate["ci95"][0] <= 0
    assert "cannot be told from noise" in result.reason


def test_a_worse_model_is_not_promoted():
    result = decide(frame([0.3] * 20), frame([0.5] * 20), None, None, FAST)
    assert not result.promote and "lower bound is below" in result.reason


def test_a_gain_that_costs_the_guard_set_more_than_the_tolerance_is_not_promoted():
    gate, champ = frame([0.6] * 30), frame([0.4] * 30)
    within = decide(gate, champ, frame([0.5] * 20, "synthetic/test"), frame([0.505] * 20, "synthetic/test"), FAST)
    assert within.promote and "within -0.0100" in within.reason          # falls 0.005: inside the 0.01 tolerance
    blocked = decide(gate, champ, frame([0.5] * 20, "synthetic/test"), frame([0.53] * 20, "synthetic/test"), FAST)
    assert not blocked.promote and "guard set synthetic/test by 0.0300" in blocked.reason
    assert blocked.guard["delta_ndcg@10"] == pytest.approx(-0.03)


def test_scores_are_paired_by_query_not_by_position():
    cand = frame([1.0, 0.0])
    champ = frame([0.0, 1.0]).iloc[::-1]
    a, b = paired_scores(cand, champ, "ndcg@10")
    assert a == [1.0, 0.0] and b == [0.0, 1.0]
    with pytest.raises(ValueError, match="different queries"):
        paired_scores(frame([1.0, 0.0]), frame([1.0]), "ndcg@10")


def test_only_a_version_the_gate_promoted_is_vetted_to_serve():
    assert champion_vetting({"version": None, "what": "the base model"}, {})[0]
    assert champion_vetting({"version": "3"}, {"flywheel.gate": "promoted"})[0]
    ok, why = champion_vetting({"version": "4"}, {"flywheel.gate": "rejected"})
    assert not ok and "aliased by hand" in why
    adapted = {"version": None, "adapter": {"version": "2"}}
    assert champion_vetting(adapted, {}, {"flywheel.gate": "promoted"})[0]
    ok, why = champion_vetting(adapted, {}, {})
    assert not ok and "query adapter version 2" in why


def test_a_gain_from_a_handful_of_queries_needs_the_randomization_test_too():
    """4 of 24 queries gain, none loses: the bootstrap's lower bound is above 0, the sign-flip p is 2 x 2**-4."""
    champ = frame([0.4] * 24)
    cand = frame([0.45] * 4 + [0.4] * 20)
    result = decide(cand, champ, None, None, FAST)
    lo, _ = result.gate["ci95"]
    assert lo > 0 and result.gate["p_value"] == pytest.approx(0.125, abs=0.03)
    assert not result.promote and "randomization test" in result.reason and "p=0.1" in result.reason
    loose = GateSettings(resamples=FAST.resamples, seed=FAST.seed, alpha=0.2)
    assert decide(cand, champ, None, None, loose).promote   # the threshold is config, not hard-wired
