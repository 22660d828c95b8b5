"""Paired statistics: the bootstrap interval of a difference on hand-made samples with known answers, and the
verdict rule on its three cases."""

from __future__ import annotations

import numpy as np
import pytest

from vlprune.experiments import paired_bootstrap, seed_spread, verdict


def test_a_constant_difference_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    b = rng.random(500)
    result = paired_bootstrap(b + 0.1, b, resamples=1000)
    assert result.difference == pytest.approx(0.1) and result.ci_low == pytest.approx(0.1)
    assert result.ci_high == pytest.approx(0.1) and result.items == 500


def test_the_interval_of_a_known_binomial_difference():
    # a beats b on 300 of 1,000 items and loses on 100: difference 0.2, standard error sqrt(0.4 - 0.04) / sqrt(1000)
    a = np.r_[np.ones(300), np.zeros(100), np.ones(300), np.zeros(300)]
    b = np.r_[np.zeros(300), np.ones(100), np.ones(300), np.zeros(300)]
    result = paired_bootstrap(a, b, resamples=4000, seed=1)
    se = np.sqrt(0.4 - 0.2**2) / np.sqrt(1000)
    assert result.difference == pytest.approx(0.2)
    assert result.ci_low == pytest.approx(0.2 - 1.96 * se, abs=0.006)
    assert result.ci_high == pytest.approx(0.2 + 1.96 * se, abs=0.006)


def test_pairing_cancels_what_both_sides_share():
    # the same item difficulty on both sides: the paired interval is far narrower than either score's spread
    rng = np.random.default_rng(2)
    hard = rng.random(2000) < 0.5
    a = (~hard).astype(float)
    b = a.copy()
    b[:40] = 1 - b[:40]  # 40 items differ
    paired = paired_bootstrap(a, b, resamples=1000)
    assert paired.ci_high - paired.ci_low < 0.02  # an unpaired interval would be about 0.06 wide


def test_the_bootstrap_is_seeded():
    a, b = np.r_[np.ones(60), np.zeros(40)], np.r_[np.ones(50), np.zeros(50)]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert paired_bootstrap(a, b, seed=3) != paired_bootstrap(a, b, seed=4)


@pytest.mark.parametrize("a, b, resamples, words", [([1, 0, 1], [1, 0], 1000, "one length"),
                                                    ([1], [0], 1000, "at least 2 items"),
                                                    ([1, 0], [0, 1], 10, "at least 1000"),
                                                    ([1, float("nan")], [0, 1], 1000, "finite")])
def test_bad_samples_are_refused(a, b, resamples, words):
    with pytest.raises(ValueError, match=words):
        paired_bootstrap(a, b, resamples=resamples)


def test_verdict_rule_on_its_three_cases():
    within_one_point = (-0.01, 0.01)
    assert verdict(-0.004, 0.006, within_one_point) == "reproduced"
    assert verdict(-0.05, -0.02, within_one_point) == "refuted"
    assert verdict(-0.02, 0.003, within_one_point) == "inconclusive"
    assert verdict(-0.008, 0.3, (-0.01, float("inf"))) == "reproduced"  # "no loss": any gain is inside


def test_seed_spread():
    assert seed_spread([0.5]) == (0.5, 0.0)
    mean, sd = seed_spread([1.0, 2.0, 3.0])
    assert mean == 2.0 and sd == pytest.approx(1.0)


def test_the_interval_of_a_mean_is_the_binomial_one_and_seeded():
    from vlprune.experiments.stats import bootstrap_mean_interval

    hits = np.r_[np.ones(600), np.zeros(400)]  # accuracy 0.6 on 1,000 items: standard error sqrt(0.24 / 1000)
    low, high = bootstrap_mean_interval(hits)
    se = np.sqrt(0.6 * 0.4 / 1000)
    assert low == pytest.approx(0.6 - 1.96 * se, abs=0.006) and high == pytest.approx(0.6 + 1.96 * se, abs=0.006)
    assert bootstrap_mean_interval(hits) == (low, high) and bootstrap_mean_interval(np.full(50, 0.5)) == (0.5, 0.5)
