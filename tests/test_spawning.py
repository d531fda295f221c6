"""Adaptive sampling's choice of frames (spawning.py): seeded k-means, least counts,
and a lab's own policy refused in one line when it misbehaves."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mdcampaign.errors import CampaignError
from mdcampaign.spawning import choose, kmeans, least_counts


def blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames around well-separated centres, ``sizes[i]`` of them around centre i."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])[: len(sizes)]
    points = np.concatenate([c + 0.1 * rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return points, truth


def test_kmeans_finds_separated_clusters_and_the_same_seed_gives_the_same_labels():
    points, truth = blobs([50, 30, 20])
    labels, centres = kmeans(points, 3, seed=7)
    assert len(centres) == 3
    for cluster in range(3):  # each true cluster is one label
        assert len(set(labels[truth == cluster])) == 1
    assert np.array_equal(labels, kmeans(points, 3, seed=7)[0])
    assert kmeans(points[:2], 5, seed=1)[1].shape[0] == 2, "never more clusters than frames"


def test_least_counts_starts_from_the_least_visited_clusters():
    points, truth = blobs([90, 8, 2])
    choice = least_counts(points, 2, 3, seed=3)
    assert [int(truth[i]) for i in choice.frames] == [2, 1], "the rarest cluster first, then the next"
    assert sorted(choice.inputs["counts"]) == [2, 8, 90] and choice.inputs["seed"] == 3
    again = least_counts(points, 2, 3, seed=3)
    assert again == choice, "the same frames and seed: the same choice"
    many = least_counts(points, 5, 3, seed=3)
    assert [int(truth[i]) for i in many.frames] == [2, 1, 0, 2, 1], "more wanted than clusters: round again"


def test_a_labs_own_policy_is_called_and_refused_in_one_line_when_it_misbehaves(tmp_path, monkeypatch):
    (tmp_path / "mypolicy.py").write_text(
        "def last(features, n, seed):\n    return list(range(len(features) - n, len(features)))\n"
        "def wrong(features, n, seed):\n    return [len(features)]\n"
        "def broken(features, n, seed):\n    raise ValueError('no frames I like')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points, _ = blobs([10, 10])
    assert choose("mypolicy:last", points, 3, 0, seed=1).frames == [17, 18, 19]
    for policy, message in (
        ("mypolicy:wrong", "must return 3 frame indices in \\[0, 20\\), returned 1 \\(out of range: \\[20\\]\\)"),
        ("mypolicy:broken", "failed \\(ValueError: no frames I like\\)"),
        ("mypolicy:absent", "mypolicy has no function absent"),
        ("nosuchmodule:f", "cannot import nosuchmodule"),
        ("justaname", "is not module:function"),
    ):
        with pytest.raises(CampaignError, match=message) as error:
            choose(policy, points, 3, 0, seed=1)
        assert "\n" not in str(error.value)
    sys.modules.pop("mypolicy", None)
