"""The study's intervals and tests hold their nominal level on simulated
studies (a few hundred each, so bounds are three binomial standard errors)."""

from __future__ import annotations

import math

import pytest

from promptsweep import calibration

SIMULATIONS = 300
SAMPLERS = calibration.distributions()


def within(row: dict, simulations: int | None = None) -> bool:
    n = simulations or row["n_simulations"]
    error = 3 * math.sqrt(row["nominal"] * (1 - row["nominal"]) / n)
    return abs(row["observed"] - row["nominal"]) <= error


@pytest.mark.parametrize("distribution", ["normal", "t3"])
def test_quality_delta_interval_covers_and_its_test_keeps_alpha(distribution: str) -> None:
    ci, test = calibration.quality_delta_rows(distribution, SAMPLERS[distribution], 10, SIMULATIONS, seed=1)
    assert ci["quantity"] == "ci:quality_delta" and ci["n_simulations"] == SIMULATIONS
    assert within(ci), ci
    assert within(test), test


def test_relative_effect_interval_covers_and_its_test_keeps_alpha() -> None:
    ci, test = calibration.relative_effect_rows("normal", SAMPLERS["normal"], 10, SIMULATIONS, seed=2)
    assert within(ci), ci
    assert within(test), test


def test_power_matches_the_t_test_on_normal_values() -> None:
    (row,) = calibration.power_rows("normal", SAMPLERS["normal"], 10, SIMULATIONS, (1.0,), seed=3)
    assert row["quantity"] == "power:quality_delta@1sd"
    assert within(row), row


def test_benjamini_hochberg_keeps_the_false_discovery_rate() -> None:
    row = calibration.fdr_row("normal", SAMPLERS["normal"], 10, 200, seed=4)
    # A study's false discovery proportion lies in [0, 1]: its mean's error is at most 0.5 / sqrt(n).
    assert row["observed"] <= 0.05 + 3 * 0.5 / math.sqrt(200), row


def test_the_percentile_bootstrap_it_replaced_was_too_narrow() -> None:
    percentile, bca = calibration.bootstrap_candidate_rows("normal", SAMPLERS["normal"], 5, SIMULATIONS, seed=5)
    assert percentile["quantity"] == "candidate:percentile_bootstrap"
    assert percentile["observed"] < 0.95 - 3 * math.sqrt(0.95 * 0.05 / SIMULATIONS), percentile
