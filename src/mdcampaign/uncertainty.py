"""How sure each number is: a replica's equilibrated mean with an error corrected for
autocorrelation, and a system's mean over its replicas with their standard error.

Per replica (one time series of an observable): the equilibration transient is cut
where the number of effectively independent samples left is largest (the method of
Chodera 2016, `pymbar.timeseries.detect_equilibration`), and the mean of the rest gets
the error ``std * sqrt(g / n)``, ``g`` the statistical inefficiency (1 + 2 x the
integrated autocorrelation, summed until it first drops to zero). Across replicas,
which are independent by construction (own seeds, own velocities): the mean of the
replicas' means with the standard error of that mean, and a chi-squared test of the
replicas' means against their own errors, which flags a system whose replicas disagree
(one stuck in another state: more sampling, not a smaller error bar, is what it needs).

A value that cannot be estimated is None with a reason, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Fewer frames than this (after the cut) give no error estimate worth printing.
MIN_FRAMES = 10
# Equilibration cuts tried: this many evenly spaced starts over the first half.
CUT_CANDIDATES = 50
# Replicas whose means disagree beyond their errors with p below this are flagged.
DISAGREE_P = 0.01
# Points kept of a replica's running mean (for the convergence figures).
RUNNING_POINTS = 40


@dataclass(frozen=True)
class ReplicaEstimate:
    mean: float | None
    error: float | None  # standard error of the mean, autocorrelation-corrected
    cut: int  # frames dropped as equilibration
    n_effective: float | None  # independent samples after the cut
    reason: str | None = None  # why mean or error is None

    def to_json(self) -> dict:
        return {
            "mean": self.mean,
            "error": self.error,
            "cut_frames": self.cut,
            "n_effective": self.n_effective,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SystemEstimate:
    replicas: int
    mean: float | None
    error: float | None  # standard error over replicas
    p_agree: float | None  # chi-squared p of the replicas' means against their errors
    reason: str | None = None

    @property
    def replicas_agree(self) -> bool | None:
        return None if self.p_agree is None else self.p_agree >= DISAGREE_P


def statistical_inefficiency(values: np.ndarray) -> float:
    """g >= 1: how many correlated samples make one independent one."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 3:
        return 1.0
    dx = x - x.mean()
    variance = float(np.dot(dx, dx)) / n
    if variance <= 0:
        return 1.0
    # the autocorrelation function at every lag at once (FFT, zero-padded)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(dx, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / (variance * np.arange(n, 0, -1))
    g = 1.0
    for t in range(1, n - 1):
        if acf[t] <= 0 and t >= 3:
            break
        g += 2.0 * acf[t] * (1.0 - t / n)
    return max(1.0, g)


def equilibration_cut(values: np.ndarray) -> tuple[int, float, float]:
    """(frames to drop, g of the rest, effective samples of the rest), the cut chosen
    to leave the most effective samples."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    g = statistical_inefficiency(x)
    best = (0, g, n / g)
    starts = sorted(set(np.linspace(0, n // 2, CUT_CANDIDATES).astype(int).tolist()))
    for start in starts[1:]:
        g = statistical_inefficiency(x[start:])
        effective = (n - start) / g
        if effective > best[2]:
            best = (start, g, effective)
    return best


def replica_estimate(values) -> ReplicaEstimate:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < MIN_FRAMES:
        return ReplicaEstimate(None, None, 0, None, f"too few frames ({len(x)}; at least {MIN_FRAMES})")
    cut, g, effective = equilibration_cut(x)
    rest = x[cut:]
    mean = float(rest.mean())
    if len(rest) < MIN_FRAMES or effective < 2:
        return ReplicaEstimate(mean, None, cut, effective, f"too few independent samples ({effective:.1f})")
    error = float(rest.std(ddof=1) * math.sqrt(g / len(rest)))
    return ReplicaEstimate(mean, error, cut, round(effective, 1))


def across_replicas(estimates: list[ReplicaEstimate]) -> SystemEstimate:
    usable = [e for e in estimates if e.mean is not None]
    if not usable:
        reasons = sorted({e.reason for e in estimates if e.reason})
        return SystemEstimate(len(estimates), None, None, None, "; ".join(reasons) or "no replica analyzed")
    means = np.array([e.mean for e in usable])
    mean = float(means.mean())
    if len(usable) < 2:
        return SystemEstimate(1, mean, None, None, "one replica: no spread across replicas to estimate an error from")
    error = float(means.std(ddof=1) / math.sqrt(len(usable)))
    errors = [e.error for e in usable]
    if any(e is None or e <= 0 for e in errors):
        return SystemEstimate(len(usable), mean, error, None, "a replica has no error of its own to test agreement")
    weights = 1.0 / np.square(errors)
    pooled = float(np.sum(weights * means) / np.sum(weights))
    chi2 = float(np.sum(weights * np.square(means - pooled)))
    from scipy.stats import chi2 as distribution

    return SystemEstimate(len(usable), mean, error, float(distribution.sf(chi2, len(usable) - 1)))


def running_mean(times, values) -> dict | None:
    """The mean of the frames so far against time, at most ``RUNNING_POINTS`` points:
    whether more time still changes the answer."""
    x = np.asarray(values, dtype=float)
    t = np.asarray(times, dtype=float)
    if len(x) == 0 or len(t) != len(x) or not np.all(np.isfinite(x)):
        return None
    cumulative = np.cumsum(x) / np.arange(1, len(x) + 1)
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), RUNNING_POINTS)).astype(int))
    return {"time_ps": [round(float(v), 3) for v in t[keep]], "mean": [float(f"{v:.6g}") for v in cumulative[keep]]}
