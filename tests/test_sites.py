"""Assigning simulations to sites: balanced, deterministic, started ones stay."""

from __future__ import annotations

import random

import pytest
import yaml

from conftest import STRUCTURES, write_campaign, write_systems
from mdcampaign.campaign import load_campaign
from mdcampaign.errors import CampaignError
from mdcampaign.sites import Site, Work, assign, projected_days

SITES = [Site("workstation", 300.0, 1), Site("stampede", 40.0, 40), Site("frontera", 200.0, 15)]
# Projected finish times of the sites may differ by at most this fraction of the
# latest one (the last simulation placed cannot be split).
TOLERANCE = 0.05


def generated_campaign(n: int, seed: int) -> list[Work]:
    rng = random.Random(seed)
    return [
        Work(
            f"sys{i // 3}/r{i % 3 + 1}", f"sys{i // 3}", rng.choice([50.0, 100.0, 200.0, 500.0]), rng.uniform(0.3, 3.0)
        )
        for i in range(n)
    ]


def spread(finish: dict[str, float]) -> float:
    return (max(finish.values()) - min(finish.values())) / max(finish.values())


@pytest.mark.parametrize("n, seed", [(300, 1), (500, 2), (1000, 3)])
def test_plans_are_balanced_within_tolerance(n, seed):
    works = generated_campaign(n, seed)
    for largest_first in (True, False):
        plan = assign(works, SITES, largest_first=largest_first)
        assert set(plan) == {w.name for w in works}
        finish = projected_days(plan, works, SITES)
        assert spread(finish) <= TOLERANCE, (largest_first, finish)


def test_plans_are_deterministic_and_stable_when_rerun():
    works = generated_campaign(400, 7)
    assert assign(works, SITES) == assign(list(works), list(SITES))
    assert assign(works, SITES, largest_first=True) == assign(works, SITES, largest_first=True)


def test_appending_simulations_never_moves_earlier_ones():
    works = generated_campaign(300, 5)
    before = assign(works, SITES)
    after = assign(works + generated_campaign(330, 6)[300:], SITES)
    assert {name: after[name] for name in before} == before


def test_started_simulations_never_move():
    works = generated_campaign(300, 9)
    started = {w.name: "workstation" for w in works[:50]}  # more than its fair share
    plan = assign(works, SITES, fixed=started, largest_first=True)
    assert all(plan[name] == "workstation" for name in started)
    finish = projected_days(plan, works, SITES)
    # the other sites absorb the rest; the overloaded site simply gets nothing new
    assert not any(plan[w.name] == "workstation" for w in works[50:])
    assert finish["stampede"] == pytest.approx(finish["frontera"], rel=TOLERANCE)


def test_measured_speeds_change_the_plan():
    works = [Work(f"a/r{i}", "a", 100.0, 1.0) for i in range(1, 41)]
    sites = [Site("one", 100.0, 1), Site("two", 100.0, 1)]
    even = assign(works, sites, largest_first=True)
    assert sum(site == "one" for site in even.values()) == 20
    faster = assign(works, sites, speeds={("one", "a"): 300.0}, largest_first=True)
    assert sum(site == "one" for site in faster.values()) == 30


def campaign_with_sites(tmp_path, systems=None, **config):
    directory = write_campaign(
        tmp_path,
        systems=systems,
        sites={"alpha": {"ns_per_day": 100, "capacity": 2}, "beta": {"ns_per_day": 100, "capacity": 2}},
        **config,
    )
    return directory


def load(directory):
    config = yaml.safe_load((directory / "config" / "config.yaml").read_text())
    return load_campaign(config, "config/config.yaml", base_dir=directory)


PINNED_SYSTEMS = [
    {"id": f"ala{i}", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 2} for i in range(4)
] + [{"id": "pinned", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 3, "site": "beta"}]


def test_each_site_gets_a_share_and_the_column_overrides(tmp_path):
    static = {"pulling": {"enabled": False}}
    alpha = load(campaign_with_sites(tmp_path / "a", systems=PINNED_SYSTEMS, site="alpha", **static))
    beta = load(campaign_with_sites(tmp_path / "b", systems=PINNED_SYSTEMS, site="beta", **static))
    names_alpha = {s.name for s in alpha.share}
    names_beta = {s.name for s in beta.share}
    assert names_alpha and names_beta and not names_alpha & names_beta
    assert names_alpha | names_beta == {s.name for s in alpha.simulations}
    assert {"pinned/r1", "pinned/r2", "pinned/r3"} <= names_beta


def test_pulling_sites_may_run_everything_not_pinned_elsewhere(tmp_path):
    alpha = load(campaign_with_sites(tmp_path / "a", systems=PINNED_SYSTEMS, site="alpha"))
    beta = load(campaign_with_sites(tmp_path / "b", systems=PINNED_SYSTEMS, site="beta"))
    assert alpha.pulls and beta.pulls
    pinned = {"pinned/r1", "pinned/r2", "pinned/r3"}
    everything = {s.name for s in alpha.simulations}
    assert {s.name for s in alpha.share} == everything - pinned
    assert {s.name for s in beta.share} == everything


def test_site_errors_are_one_line(tmp_path):
    directory = campaign_with_sites(tmp_path / "a")
    with pytest.raises(CampaignError, match="say which one this run is"):
        load(directory)
    directory = campaign_with_sites(tmp_path / "b", site="gamma")
    with pytest.raises(CampaignError, match=r"site 'gamma' .* must be one of: alpha, beta"):
        load(directory)
    directory = campaign_with_sites(tmp_path / "c", site="alpha")
    write_systems(directory, [{"id": "x", "structure": STRUCTURES / "alanine-dipeptide.pdb", "site": "delta"}])
    with pytest.raises(CampaignError, match=r"line 2 \(id 'x'\), column site: 'delta' is not one of"):
        load(directory)
