"""Adaptive sampling: which frames new simulations start from.

A round looks at every frame its system's simulations have produced, described by
their features (the ones the analysis writes for Markov models, analysis.write_features:
sin and cos of the backbone dihedrals), groups them with k-means and starts the next
simulations from the clusters visited least (least counts): the time goes where
sampling is poor, not where the simulations already are.

Plain NumPy and seeded: the same frames and seed give the same choice on any machine
(k-means here is a few lines of Lloyd's algorithm from a k-means++ start, in float64,
single-threaded; a threaded library's result could depend on the thread count). A
lab's own policy is a function named ``module:function`` that gets the features of
every frame and returns the indices of the frames to start from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import CampaignError

LEAST_COUNTS = "least_counts"
KMEANS_ITERATIONS = 100


@dataclass(frozen=True)
class Choice:
    """The frames a round starts from, and what the policy saw (for the lineage)."""

    frames: list[int]  # indices into the round's frames, one per new simulation
    inputs: dict  # the policy's own record: clusters, their counts, its seed


def kmeans(features: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels of each frame and the centres: k-means++ start, then Lloyd's
    iterations until no label changes (at most KMEANS_ITERATIONS)."""
    points = np.asarray(features, dtype=np.float64)
    n = len(points)
    k = max(1, min(int(n_clusters), n))
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(n)]]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.integers(n) if total <= 0 else rng.choice(n, p=nearest / total)
        centres.append(points[pick])
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    centres = np.array(centres)
    labels = np.full(n, -1)
    for _ in range(KMEANS_ITERATIONS):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new = distances.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for cluster in range(k):
            members = points[labels == cluster]
            if len(members):
                centres[cluster] = members.mean(axis=0)
    return labels, centres


def least_counts(features: np.ndarray, n_choose: int, n_clusters: int, seed: int) -> Choice:
    """``n_choose`` frames, each from one of the least visited clusters (ties broken
    at random, seeded), a random frame of its cluster; with more frames to choose than
    clusters, the order starts again."""
    labels, _ = kmeans(features, n_clusters, seed)
    counts = np.bincount(labels, minlength=labels.max() + 1)
    rng = np.random.default_rng(seed + 1)
    visited = np.flatnonzero(counts)
    order = [int(c) for c in visited[np.lexsort((rng.random(len(visited)), counts[visited]))]]
    frames, clusters = [], []
    for turn in range(n_choose):
        cluster = order[turn % len(order)]
        frames.append(int(rng.choice(np.flatnonzero(labels == cluster))))
        clusters.append(cluster)
    return Choice(
        frames,
        {
            "policy": LEAST_COUNTS,
            "clusters": len(counts),
            "counts": counts.tolist(),
            "chosen_clusters": clusters,
            "seed": int(seed),
        },
    )


def user_function(spec: str, what: str) -> Callable:
    """A lab's own function, named ``module:function`` (the module importable from the
    campaign folder or the environment); refused in one line if it cannot be found."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise CampaignError(f"{what}: '{spec}' is not module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - a lab's module may fail in any way on import
        raise CampaignError(f"{what}: cannot import {module_name} ({type(error).__name__}: {error})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise CampaignError(f"{what}: {module_name} has no function {name}")
    return function


def choose(policy: str, features: np.ndarray, n_choose: int, n_clusters: int, seed: int) -> Choice:
    """The frames to start ``n_choose`` simulations from, by ``policy`` (least_counts,
    or module:function called with the features of every frame, the number wanted
    and the seed, returning frame indices)."""
    if policy == LEAST_COUNTS:
        return least_counts(features, n_choose, n_clusters, seed)
    function = user_function(policy, "spawn.policy")
    try:
        frames = [int(i) for i in function(np.asarray(features), n_choose, seed)]
    except Exception as error:  # noqa: BLE001 - the lab's function, said in one line
        raise CampaignError(f"spawn.policy: {policy} failed ({type(error).__name__}: {error})") from None
    bad = [i for i in frames if not 0 <= i < len(features)]
    if len(frames) != n_choose or bad:
        raise CampaignError(
            f"spawn.policy: {policy} must return {n_choose} frame indices in [0, {len(features)}), "
            f"returned {len(frames)}{f' (out of range: {bad[:3]})' if bad else ''}"
        )
    return Choice(frames, {"policy": policy, "seed": int(seed)})
