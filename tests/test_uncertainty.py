"""How sure each number is (mdcampaign.uncertainty), on series whose answer is known:
correlated noise of a known autocorrelation time, a transient of known length,
replicas drawn from one distribution and from two."""

from __future__ import annotations

import numpy as np
import pytest

from mdcampaign.uncertainty import (
    across_replicas,
    equilibration_cut,
    replica_estimate,
    statistical_inefficiency,
)


def ar1(n: int, phi: float, rng: np.random.Generator, mean: float = 0.0) -> np.ndarray:
    """An AR(1) series: statistical inefficiency (1 + phi) / (1 - phi)."""
    x = np.empty(n)
    x[0] = rng.normal() / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal()
    return x + mean


def test_the_statistical_inefficiency_of_correlated_noise_is_what_theory_says():
    rng = np.random.default_rng(1)
    for phi in (0.0, 0.5, 0.9):
        g = np.median([statistical_inefficiency(ar1(4000, phi, rng)) for _ in range(20)])
        assert g == pytest.approx((1 + phi) / (1 - phi), rel=0.2), phi
    assert statistical_inefficiency(np.ones(50)) == 1.0


def test_the_error_bars_cover_the_true_mean_as_often_as_they_should():
    rng = np.random.default_rng(2)
    covered = [abs(e.mean) <= 2 * e.error for e in (replica_estimate(ar1(2000, 0.9, rng)) for _ in range(200))]
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)  # 95% within 2 sigma, give or take


def test_a_transient_at_the_start_is_cut():
    rng = np.random.default_rng(3)
    x = ar1(1000, 0.5, rng)
    x[:150] += np.linspace(10, 0, 150)  # warm start, relaxing
    cut, _, _ = equilibration_cut(x)
    assert 100 <= cut <= 300, cut
    estimate = replica_estimate(x)
    assert abs(estimate.mean) < 3 * estimate.error


def test_what_cannot_be_estimated_is_none_with_a_reason_never_nan():
    short = replica_estimate([1.0, 2.0, 3.0])
    assert short.mean is None and "too few frames (3" in short.reason
    one = across_replicas([replica_estimate(np.arange(100.0) % 7)])
    assert one.error is None and one.reason.startswith("one replica")
    nothing = across_replicas([short, short])
    assert nothing.mean is None and "too few frames" in nothing.reason
    constant = replica_estimate(np.ones(100))
    assert constant.mean == 1.0 and constant.error == 0.0
    flat = across_replicas([constant, constant])
    assert flat.p_agree is None and "no error of its own" in flat.reason


def test_replicas_that_disagree_beyond_their_errors_are_flagged():
    rng = np.random.default_rng(4)
    same = across_replicas([replica_estimate(ar1(1000, 0.5, rng, 1.0)) for _ in range(6)])
    assert same.replicas_agree and same.mean == pytest.approx(1.0, abs=4 * same.error)
    split = across_replicas([replica_estimate(ar1(1000, 0.5, rng, m)) for m in (1.0, 1.0, 1.0, 2.0, 2.0, 2.0)])
    assert split.replicas_agree is False and split.p_agree < 1e-6


def _replica(mean: float, error: float, rmsf: list[float]) -> dict:
    stats = {"mean": mean, "error": error, "reason": None}
    return {
        "statistics": {name: stats for name in ("rmsd_nm", "rg_nm", "temperature_K")},
        "rmsf_per_residue": {
            "residue_index": list(range(len(rmsf))),
            "residue": ["ALA1", "GLY2", "ALA3"][: len(rmsf)],
            "rmsf_nm": rmsf,
        },
    }


def test_a_group_is_compared_with_its_reference_with_error_bars():
    from mdcampaign.summary import NOT_AVAILABLE, comparisons, system_statistics

    analyses = {
        "wt": [_replica(0.20, 0.01, [0.1, 0.1, 0.1]), _replica(0.21, 0.01, [0.1, 0.12, 0.1])],
        "mut": [_replica(0.40, 0.01, [0.1, 0.3, 0.1]), _replica(0.41, 0.01, [0.1, 0.32, 0.1])],
        "same": [_replica(0.20, 0.01, [0.1, 0.1, 0.1]), _replica(0.21, 0.01, [0.1, 0.12, 0.1])],
        "single": [_replica(0.5, 0.01, [0.1, 0.1, 0.1])],
    }
    groups = {"wt": ("series", True), "mut": ("series", False), "same": ("series", False), "single": ("series", False)}
    table = comparisons(analyses, groups).set_index(["system", "observable", "residue"])
    assert table.loc[("mut", "rmsd_nm", ""), "differs"] == "yes"
    assert float(table.loc[("mut", "rmsd_nm", ""), "difference"]) == pytest.approx(0.2)
    assert table.loc[("same", "rmsd_nm", ""), "differs"] == "no"
    assert table.loc[("mut", "rmsf_nm", "GLY2 (2)"), "differs"] == "yes"
    assert table.loc[("mut", "rmsf_nm", "ALA1 (1)"), "differs"] == NOT_AVAILABLE, "identical replicas: no error bar"
    single = table.loc[("single", "rmsd_nm", "")]
    assert single["differs"] == NOT_AVAILABLE and "two replicas" in single["note"]
    assert "wt" not in table.index.get_level_values("system"), "the reference is not compared with itself"
    frame = system_statistics(analyses, groups).set_index("system")
    assert frame.loc["wt", "reference"] == "yes" and frame.loc["mut", "group"] == "series"
