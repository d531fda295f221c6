"""Pulling work across sites: claims on the store (exclusive, leased, taken over,
guarded), the preference rule, and a site's view, on a real local store with real
processes. Sites running real campaigns against one store over real SSH are in
test_pulling_ssh.py."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import STRUCTURES, TINY_PROTOCOL, write_campaign
from mdcampaign.claims import MAX_FAILURES, ClaimBoard
from mdcampaign.errors import TransferError
from mdcampaign.pulling import SiteView, dead_holders
from mdcampaign.sites import HANDOVER_GAIN, Site, Work, handover_gain, preferred_order
from mdcampaign.store import LocalStore

# Seconds. Ages are whole seconds (the store's file times) and publishing needs a claim
# younger than half a lease: 4 s leaves that a second of slack.
LEASE = 4.0


def board(root: Path, lease: float = LEASE) -> ClaimBoard:
    return ClaimBoard(LocalStore(root), lease)


def _claim_in_process(args) -> str:
    root, holder = args
    return board(Path(root), lease=600).claim("sys/r1", 3, holder, "{}").outcome  # no claim may expire meanwhile


def test_of_many_processes_claiming_at_once_exactly_one_wins(tmp_path):
    holders = [(str(tmp_path), f"site{i % 3}+host-{i}.s0") for i in range(12)]
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        outcomes = pool.map(_claim_in_process, holders)
    assert outcomes.count("claimed") == 1, outcomes
    assert set(outcomes) <= {"claimed", "held", "lost"}  # lost: it tried the same new claim at once
    listing = board(tmp_path).listing()
    assert listing.of("sys/r1").holder == holders[outcomes.index("claimed")][1]


def test_an_expired_claim_is_taken_over_and_its_old_holder_cannot_publish(tmp_path):
    store = LocalStore(tmp_path)
    claims = board(tmp_path)
    first = claims.claim("sys/r1", 3, "alpha+host-1.s0").lease
    assert claims.claim("sys/r1", 3, "beta+host-2.s0").outcome == "held"
    assert claims.renew([first]) == set()
    time.sleep(LEASE + 1.5)  # no renewal: the claim expires (by the store's clock)
    second = claims.claim("sys/r1", 3, "beta+host-2.s0")
    assert second.outcome == "claimed" and second.lease.generation > first.generation
    # the old holder comes back: it has lost, and its segment never reaches the store
    assert claims.renew([first]) == {first}
    segment = tmp_path / "made"
    segment.mkdir()
    (segment / "trajectory.xtc").write_bytes(b"old holder's frames")
    with pytest.raises(TransferError, match="lease lost: another site took over sys/r1"):
        store.put_directory(
            {"trajectory.xtc": segment / "trajectory.xtc"},
            "sims/sys/r1/segments/0000",
            guard=claims.guard_script(first),
        )
    assert not (tmp_path / "sims/sys/r1/segments/0000").exists()
    assert not list((tmp_path / "sims/sys/r1/segments").iterdir()), "no partial copy left behind"
    # the new holder publishes
    assert claims.renew([second.lease]) == set()
    store.put_directory(
        {"trajectory.xtc": segment / "trajectory.xtc"},
        "sims/sys/r1/segments/0000",
        guard=claims.guard_script(second.lease),
    )
    assert (tmp_path / "sims/sys/r1/segments/0000/trajectory.xtc").exists()
    # releasing a lost claim changes nothing; the holder's own release frees the simulation
    claims.release(first)
    assert claims.listing().of("sys/r1").ended is None
    claims.release(second.lease)
    assert claims.listing().of("sys/r1").ended == "released"
    assert claims.claim("sys/r1", 3, "alpha+host-1.s0").outcome == "claimed"


def test_claims_count_the_segments_in_the_store_not_the_listing(tmp_path):
    claims = board(tmp_path)
    for segment in ("0000", "0001"):
        folder = tmp_path / "sims/sys/r1/segments" / segment
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
    result = claims.claim("sys/r1", 3, "alpha+host-1.s0")
    assert (result.outcome, result.done) == ("claimed", 2)
    claims.release(result.lease)
    (tmp_path / "sims/sys/r1/segments/0002").mkdir()
    (tmp_path / "sims/sys/r1/segments/0002/manifest.json").write_text("{}")
    assert claims.claim("sys/r1", 3, "beta+host-2.s0").outcome == "claimed", "complete only once analyzed"
    analysis = tmp_path / "sims/sys/r1/analysis/0003"
    analysis.mkdir(parents=True)
    (analysis / "analysis.json").write_text("{}")
    time.sleep(LEASE + 1.5)
    assert claims.claim("sys/r1", 3, "alpha+host-1.s0").outcome == "complete"
    assert claims.listing().of("sys/r1").done == 3


def test_a_simulation_that_keeps_failing_is_given_up(tmp_path):
    claims = board(tmp_path)
    for attempt in range(MAX_FAILURES):
        result = claims.claim("sys/r1", 2, f"alpha+host-{attempt}.s0")
        assert result.outcome == "claimed"
        claims.release(result.lease, failed=True)
    assert claims.claim("sys/r1", 2, "beta+host-9.s0").outcome == "failed"
    assert claims.listing().of("sys/r1").failures == MAX_FAILURES


def test_a_started_simulation_stays_on_its_site_when_it_may_not_migrate(tmp_path):
    claims = board(tmp_path)
    first = claims.claim("sys/r1", 2, "alpha+host-1.s0", site="alpha").lease
    assert claims.published(first, 1, "alpha", 100.0)
    claims.release(first)
    refused = claims.claim("sys/r1", 2, "beta+host-2.s0", migrate=False, site="beta")
    assert (refused.outcome, refused.detail) == ("pinned", "alpha")
    assert claims.claim("sys/r1", 2, "alpha+host-1.s0", migrate=False, site="alpha").outcome == "claimed"


def test_a_killed_job_of_this_site_on_this_host_is_taken_back_at_once(tmp_path):
    claims = board(tmp_path, lease=600)
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    host = "thishost"
    claims.claim("sys/r1", 2, f"alpha+{host}-{dead.pid}.s0")
    claims.claim("sys/r2", 2, f"beta+{host}-{dead.pid}.s0")
    listing = claims.listing()
    assert dead_holders(listing, "alpha", host) == {f"alpha+{host}-{dead.pid}.s0"}
    assert claims.claim("sys/r1", 2, "alpha+thishost-1.s0", dead=(f"alpha+{host}-{dead.pid}.s0",)).outcome == "claimed"
    # another site's claim waits for its lease, wherever its holder ran
    assert dead_holders(listing, "alpha", host) == {f"alpha+{host}-{dead.pid}.s0"}
    assert claims.claim("sys/r2", 2, "alpha+thishost-1.s0").outcome == "held"


def _claim_under_faketime(root: Path, offset: str, holder: str) -> str:
    """Claim sys/r1 from a process whose clock is ``offset`` off (Debian's faketime)."""
    code = (
        "import sys; from pathlib import Path; from mdcampaign.claims import ClaimBoard; "
        "from mdcampaign.store import LocalStore; "
        f"print(ClaimBoard(LocalStore(Path(sys.argv[1])), {LEASE}).claim('sys/r1', 2, sys.argv[2]).outcome)"
    )
    result = subprocess.run(
        ["faketime", "-f", offset, sys.executable, "-c", code, str(root), holder],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime is not installed (apt-get install faketime)")
def test_lease_ages_come_from_the_store_clock_whatever_the_callers_clock(tmp_path):
    assert _claim_under_faketime(tmp_path, "+3h", "ahead+host-1.s0") == "claimed"
    claims = board(tmp_path)
    listing = claims.listing()
    assert listing.now == pytest.approx(time.time(), abs=2), "the store's clock, not the claimant's"
    assert 0 <= listing.of("sys/r1").age < 3
    # a live holder three hours ahead keeps its claim, from a correct clock and from one behind
    assert claims.claim("sys/r1", 2, "correct+host-2.s0").outcome == "held"
    assert _claim_under_faketime(tmp_path, "-3h", "behind+host-3.s0") == "held"
    # renewed by the site ahead, it is still fresh by the store's clock
    assert _claim_under_faketime(tmp_path, "+3h", "ahead+host-1.s0") == "claimed"
    assert 0 <= claims.listing().of("sys/r1").age < 3
    time.sleep(LEASE + 1.5)  # no renewal: once a lease old it is taken over, by a site behind too
    assert _claim_under_faketime(tmp_path, "-3h", "behind+host-3.s0") == "claimed"
    assert claims.listing().of("sys/r1").holder == "behind+host-3.s0"


# -- the preference rule ------------------------------------------------------------

SITES = [Site("workstation", 300.0, 2), Site("stampede", 40.0, 40), Site("frontera", 200.0, 16)]


def test_a_slow_site_leaves_the_largest_to_faster_sites_with_room_and_takes_the_rest_largest_first():
    works = [Work(f"s{i}/r1", f"s{i}", 100.0, 0.5 + i) for i in range(10)]
    everyone = {"workstation", "frontera"}
    alone = preferred_order(SITES[1], works, SITES, live=set(), free={})
    assert [w.name for w in alone] == [w.name for w in sorted(works, key=lambda w: -w.size)]
    crowded = preferred_order(SITES[1], works, SITES, live=everyone, free={"workstation": 2, "frontera": 3})
    assert len(crowded) == 5, "the 5 free slots of faster sites get 5 simulations"
    assert [w.name for w in crowded] == [w.name for w in alone][5:], "the largest are left to the faster sites"
    full = preferred_order(SITES[1], works, SITES, live=everyone, free={"workstation": 0, "frontera": 0})
    assert len(full) == 10, "with no room elsewhere, the slow site takes everything"
    # the fastest site never leaves anything
    assert len(preferred_order(SITES[0], works, SITES, live=everyone, free={"frontera": 16})) == 10


def test_measured_speeds_decide_which_site_a_system_suits():
    works = [Work("big/r1", "big", 10.0, 1.0), Work("small/r1", "small", 10.0, 1.0)]
    sites = [Site("gpu", 100.0, 1), Site("cpu", 100.0, 1)]
    speeds = {("gpu", "big"): 500.0, ("gpu", "small"): 100.0, ("cpu", "big"): 100.0, ("cpu", "small"): 100.0}
    order = preferred_order(sites[1], works, sites, live={"gpu"}, free={"gpu": 1}, speeds=speeds)
    assert [w.name for w in order] == ["small/r1"], "the CPU site leaves the system the GPU runs 5x faster"


def test_a_site_takes_back_what_it_can_resume_unless_a_much_faster_site_is_live():
    works = [Work(f"s{i}/r1", f"s{i}", 100.0, 1.0 + i) for i in range(4)]
    sites = [Site("one", 100.0, 2), Site("two", 100.0, 2), Site("fast", 1000.0, 1)]
    order = preferred_order(
        sites[0],
        works,
        sites,
        live={"two"},
        free={"two": 0},
        resumable=frozenset({"s0/r1"}),
        elsewhere={"s3/r1": "two"},
    )
    assert [w.name for w in order] == ["s0/r1", "s2/r1", "s1/r1", "s3/r1"], "own checkpoint first, another's last"
    order = preferred_order(
        sites[0],
        works,
        sites,
        live={"two", "fast"},
        free={"two": 0, "fast": 0},
        resumable=frozenset({"s0/r1"}),
        elsewhere={"s3/r1": "two"},
    )
    assert order[0].name != "s0/r1", "with a 10x faster site live, resuming here is no reason to go first"


# -- a site's view --------------------------------------------------------------------


def test_a_sites_view_follows_pins_claims_and_completion(tmp_path):
    import yaml

    from mdcampaign.campaign import load_campaign

    systems = [
        {"id": "ala", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 3},
        {"id": "mine", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1, "site": "beta"},
    ]
    sites = {"alpha": {"ns_per_day": 100, "capacity": 1}, "beta": {"ns_per_day": 100, "capacity": 1}}
    directory = write_campaign(tmp_path / "c", systems=systems, sites=sites, site="alpha", store=str(tmp_path / "s"))
    campaign = load_campaign(yaml.safe_load((directory / "config/config.yaml").read_text()), base_dir=directory)
    claims = board(tmp_path / "s", campaign.pulling.lease_seconds)
    held = claims.claim("ala/r1", 2, "beta+elsewhere-1.s0").lease
    view = SiteView(campaign, claims.listing())
    assert [s.name for s in view.unfinished()] == ["ala/r1", "ala/r2", "ala/r3"], "mine/r1 is pinned to beta"
    assert [s.name for s in view.claimable()] == ["ala/r2", "ala/r3"]
    assert view.live_sites() == {"beta": 1}
    claims.published(held, 2, "beta", 250.0)
    claims.published(held, 2, "beta", analyzed=True)
    view = SiteView(campaign, claims.listing())
    assert [s.name for s in view.unfinished()] == ["ala/r2", "ala/r3"]
    assert view.measured_speeds() == {("beta", "ala"): 250.0}
    record = json.loads(json.dumps(view.listing.of("ala/r1").__dict__))
    assert record["holder"] == "beta+elsewhere-1.s0" and record["analyzed"] == 2


def test_a_slow_site_never_leaves_what_only_it_may_run():
    works = [Work("pinned/r1", "pinned", 100.0, 1.0), Work("free/r1", "free", 100.0, 1.0)]
    order = preferred_order(
        SITES[1], works, SITES, live={"frontera"}, free={"frontera": 10}, only_here=frozenset({"pinned/r1"})
    )
    assert [w.name for w in order] == ["pinned/r1"]


def test_an_expired_claim_is_never_revived_by_its_holder_but_may_be_taken_again(tmp_path):
    claims = board(tmp_path)
    first = claims.claim("sys/r1", 2, "alpha+host-1.s0").lease
    time.sleep(LEASE + 1.5)  # the store was out of reach for a whole lease
    assert claims.renew([first]) == {first}, "an expired claim is not renewed: a taker may be counting segments"
    assert not claims.published(first, 1, "alpha")
    again = claims.claim("sys/r1", 2, "alpha+host-1.s0")  # nobody took it: the same holder takes it anew
    assert again.outcome == "claimed" and again.lease.generation > first.generation


# -- a site whose clock is hours off, with real Snakemake sites --------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime is not installed (apt-get install faketime)")
def test_a_site_three_hours_ahead_shares_a_campaign_and_is_taken_over_only_after_its_lease(tmp_path):
    """Site `ahead` runs its whole Snakemake under faketime +3h, site `correct` with the
    machine's clock, one shared store: neither takes a claim the other holds while it
    lives; `ahead`, killed with kill -9, is taken over a lease after its last renewal;
    every segment is stored once; the records say whose clock their times are by."""
    from conftest import REPO, SNAKEFILE
    from test_pulling_ssh import ALA, assert_exact, claims_of, fetches, kill_tree

    lease_minutes = 0.25
    store = tmp_path / "store"
    spec = {name: {"scratch": str(tmp_path / f"scratch-{name}"), "ns_per_day": 100} for name in ("ahead", "correct")}
    folders = {
        name: write_campaign(
            tmp_path / f"at-{name}",
            systems=[{"id": "ala", "structure": ALA, "replicas": 4}],
            protocol={"target_ns": 0.006},
            store=str(store),
            sites=spec,
            site=name,
            pulling={"lease_minutes": lease_minutes, "poll_seconds": 2},
        )
        for name in spec
    }
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")]
    runs = {}
    for name, prefix in (("ahead", ["faketime", "-f", "+3h"]), ("correct", [])):
        out = open(folders[name] / "snakemake.out", "w")  # noqa: SIM115 - the process writes it while it runs
        runs[name] = subprocess.Popen([*prefix, *command], cwd=folders[name], stdout=out, stderr=subprocess.STDOUT)
    simulations = [f"ala/r{i}" for i in range(1, 5)]
    deadline, victim = time.time() + 300, None
    while time.time() < deadline and victim is None:  # both work, and `ahead` holds a started simulation
        claims = {sim: claims_of(str(store), sim) for sim in simulations}
        holders = {c.get("holder", "").split("+")[0] for c in claims.values() if c.get("holder")}
        for sim, claim in claims.items():
            started = not claim.get("ended") and claim.get("done", 0) >= 1
            if holders >= {"ahead", "correct"} and claim.get("holder", "").startswith("ahead+") and started:
                victim = sim
        time.sleep(0.1)
    assert victim, "the site ahead never held a started simulation while the other worked"
    last_renewal = claims_of(str(store), victim)["renewed"]
    kill_tree(runs["ahead"].pid)
    runs["ahead"].wait()
    assert runs["correct"].wait(timeout=600) == 0, (folders["correct"] / "snakemake.out").read_text()[-5000:]
    assert_exact(str(store), simulations, 3, 0.1)
    # taken over once a lease had passed since its last renewal, by the store's clock
    taken = store / "claims" / victim / claims_of(str(store), victim)["generation"]
    assert claims_of(str(store), victim)["holder"].startswith("correct+")
    assert taken.stat().st_mtime - last_renewal >= lease_minutes * 60 - 1
    # no claim was taken from a live holder: each segment stored once, no lease lost by the correct site
    counts = {name: fetches(folder) for name, folder in folders.items()}
    every = [(sim, f"{k:04d}") for sim in simulations for k in range(3)]
    assert {seg: sum(c.get(seg, 0) for c in counts.values()) for seg in every} == dict.fromkeys(every, 1)
    correct_logs = "\n".join(p.read_text() for p in (folders["correct"] / "logs").rglob("*.log"))
    assert "lease lost" not in correct_logs and "taken over" not in correct_logs
    # the records say whose clock their times are by
    offsets = {}
    for path in (store / "sims").glob("ala/r*/segments/*/manifest.json"):
        manifest = json.loads(path.read_text())
        offsets.setdefault(manifest["site"], set()).add(round(manifest["clock_offset_s"] / 3600))
        assert manifest["clock"] and manifest["info"]["clock"]
    assert offsets == {"correct": {0}, "ahead": {3}}, offsets
    # status from a machine whose clock is off says so, and still reads the claims by the store's clock
    status = subprocess.run(
        ["faketime", "-f", "+3h", "mdcampaign", "status", "--no-slurm"],
        cwd=folders["correct"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and "4 done" in status.stdout, status.stdout + status.stderr
    assert "note: this machine's clock is 3.0 h ahead of the store's" in status.stdout


def test_a_hand_over_pays_only_when_the_rest_finishes_a_quarter_sooner_its_start_included():
    """The rule the tail hand-over is modelled with (benchmarks/pulling.py)."""
    slow, fast, same = Site("slow", 40.0, 8), Site("fast", 300.0, 2), Site("same", 40.0, 8)
    rest = Work("a/r1", "a", 20.0, 1.0)  # 0.5 days on slow, 0.067 on fast
    assert handover_gain(rest, slow, fast, {}) == pytest.approx(1 - 40 / 300)
    assert handover_gain(rest, slow, same, {}) == pytest.approx(0.0)
    assert handover_gain(rest, fast, slow, {}) < 0
    # a start that costs most of the gain (a queue wait) makes it not worth asking
    assert handover_gain(rest, slow, fast, {}, overhead_days=0.4) < HANDOVER_GAIN
    # measured speeds decide when there are any
    assert handover_gain(rest, slow, fast, {("fast", "a"): 45.0}) < HANDOVER_GAIN
    assert handover_gain(Work("a/r1", "a", 0.0, 1.0), slow, fast, {}) == 0.0


def test_a_hand_over_request_reaches_the_holder_and_reserves_the_released_claim_for_the_asker(tmp_path):
    claims = board(tmp_path)
    lease = claims.claim("sys/r1", 5, "slow+job1.s0", site="slow").lease
    assert claims.ask("sys/r1", lease.generation, "fast")
    listing = claims.listing()
    assert listing.of("sys/r1").asked_by == "fast" and listing.of("sys/r1").age < LEASE, "asking renews nothing"
    asked: dict = {}
    assert claims.renew([lease], asked) == set() and asked == {lease: "fast"}
    claims.release(lease)  # the holder, at the end of its segment
    assert claims.listing().of("sys/r1").reserved_for(LEASE) == "fast"
    # for a lease, nobody else takes it: not the holder's site, not a third one
    for holder, site in (("slow+job1.s1", "slow"), ("other+job2.s0", "other")):
        refused = claims.claim("sys/r1", 5, holder, site=site)
        assert (refused.outcome, refused.detail) == ("reserved", "fast"), refused
    taken = claims.claim("sys/r1", 5, "fast+job3.s0", site="fast")
    assert taken.outcome == "claimed" and taken.lease.generation > lease.generation
    assert claims.listing().of("sys/r1").requests == [], "a new claim clears the requests"
    # a request for a claim that is no longer held is refused, and one can be withdrawn
    assert not claims.ask("sys/r1", lease.generation, "other")
    assert claims.ask("sys/r1", taken.lease.generation, "other")
    claims.withdraw("sys/r1", taken.lease.generation, "other")
    assert claims.listing().of("sys/r1").asked_by is None
    # a hostile site name stays one file name, quoted
    with pytest.raises(ValueError):
        claims.ask("sys/r1", taken.lease.generation, "../x")
    assert claims.ask("sys/r1", taken.lease.generation, "a;touch pwned")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def two_sites(tmp_path: Path, store: Path, spec: dict, platforms: dict, system: dict, protocol: dict) -> dict:
    """A campaign folder per site of ``spec``, sharing ``store``, each on its own platform."""
    return {
        name: write_campaign(
            tmp_path / f"at-{name}",
            systems=[system],
            protocol=protocol,
            store=str(store),
            sites=spec,
            site=name,
            platform=platforms[name],
            pulling={"lease_minutes": 0.5, "poll_seconds": 1},
        )
        for name in spec
    }


def test_the_tail_a_much_faster_site_with_nothing_to_claim_takes_over_at_a_segment_end(tmp_path):
    """Site `slow` (OpenMM's Reference platform: about 9x slower than CPU on this
    solvated peptide) runs the campaign's only simulation; site `fast` (CPU) starts once
    `slow` has stored a segment:
    with nothing to claim it asks for it; `slow` stores the segment it runs, releases
    it, and `fast` continues from that segment's end. Exact, each segment simulated
    and stored once, nothing redone."""
    from conftest import REPO, SNAKEFILE
    from test_pulling_ssh import ALA, assert_exact, claims_of, fetches

    store = tmp_path / "store"
    spec = {
        "slow": {"scratch": str(tmp_path / "scratch-slow"), "ns_per_day": 10, "capacity": 1},
        "fast": {"scratch": str(tmp_path / "scratch-fast"), "ns_per_day": 10000, "capacity": 1},
    }
    folders = two_sites(
        tmp_path,
        store,
        spec,
        {"slow": "Reference", "fast": "CPU"},
        {"id": "ala", "structure": ALA, "replicas": 1, "solvent": "explicit", "forcefield": "amber14"},
        {"segment_ns": 0.006, "target_ns": 0.03, "frame_interval_ps": 1.0, "checkpoint_interval_ps": 2.0},
    )
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")]

    def start(name: str) -> subprocess.Popen:
        out = open(folders[name] / "snakemake.out", "w")  # noqa: SIM115 - the process writes it while it runs
        return subprocess.Popen(command, cwd=folders[name], stdout=out, stderr=subprocess.STDOUT)

    runs = {"slow": start("slow")}
    deadline = time.time() + 300
    while time.time() < deadline and claims_of(str(store), "ala/r1").get("done", 0) < 1:
        assert runs["slow"].poll() is None, (folders["slow"] / "snakemake.out").read_text()[-3000:]
        time.sleep(0.5)
    assert claims_of(str(store), "ala/r1").get("done", 0) >= 1, "slow never stored its first segment"
    runs["fast"] = start("fast")
    for name, run in runs.items():
        assert run.wait(timeout=900) == 0, (folders[name] / "snakemake.out").read_text()[-5000:]
    assert_exact(str(store), ["ala/r1"], 5, 1.0)
    by_site = {}
    for path in sorted((store / "sims" / "ala" / "r1" / "segments").glob("*/manifest.json")):
        by_site[path.parent.name] = json.loads(path.read_text())["site"]
    assert by_site["0000"] == "slow" and by_site["0004"] == "fast", by_site
    handed_at = min(segment for segment, site in by_site.items() if site == "fast")
    assert all(site == "slow" for segment, site in by_site.items() if segment < handed_at), by_site
    counts = {name: fetches(folder) for name, folder in folders.items()}
    every = [("ala/r1", f"{k:04d}") for k in range(5)]
    assert {seg: sum(c.get(seg, 0) for c in counts.values()) for seg in every} == dict.fromkeys(every, 1), counts
    logs = {
        name: "\n".join(p.read_text() for p in (folder / "logs").rglob("*.log")) for name, folder in folders.items()
    }
    assert "asked site slow for ala/r1" in logs["fast"], logs["fast"][-3000:]
    assert f"ala/r1 handed over to site fast at segment {int(handed_at)}" in logs["slow"], logs["slow"][-3000:]
    assert "lease lost" not in logs["slow"] + logs["fast"], "a hand-over is a release, never a takeover"
    # nothing redone: each segment was simulated at one site only
    simulated = [log.stem for folder in folders.values() for log in (folder / "logs" / "simulate").rglob("*.log")]
    assert sorted(simulated) == [f"{k:04d}" for k in range(5)], simulated


def test_a_segment_paused_at_one_site_continues_at_another_from_its_progress_parked_in_the_store(tmp_path):
    """Site `a` (OpenMM's Reference platform) is stopped with `sites stop --now` in the
    middle of a segment: its job checkpoints, parks the segment's progress in the store
    and releases the claim. Site `b` (CPU, where Reference's checkpoint cannot load)
    takes the simulation and continues that segment from the parked step, not from its
    start: exact, each segment stored once, and the parked copy gone once it is."""
    from conftest import REPO, SNAKEFILE
    from mdcampaign.engines.openmm.runner import latest_checkpoint_header
    from test_pulling_ssh import ALA, assert_exact, claims_of, fetches

    store = tmp_path / "store"
    spec = {name: {"scratch": str(tmp_path / f"scratch-{name}"), "ns_per_day": 100, "capacity": 1} for name in "ab"}
    spec["a"]["profile"] = "local"
    folders = two_sites(
        tmp_path,
        store,
        spec,
        {"a": "Reference", "b": "CPU"},
        {"id": "ala", "structure": ALA, "replicas": 1},
        # a segment lasts about 10 s on Reference, checkpointed every 50 ps
        {"segment_ns": 1.0, "target_ns": 2.0, "frame_interval_ps": 5.0, "checkpoint_interval_ps": 50.0},
    )
    work = Path(spec["a"]["scratch"]) / "ala" / "r1" / "0001" / "work"
    started = subprocess.run(["mdcampaign", "sites", "start", "a"], cwd=folders["a"], capture_output=True, text=True)
    assert "driver started" in started.stdout, started.stdout + started.stderr
    pid = int((folders["a"] / ".mdcampaign" / "driver.pid").read_text())
    deadline = time.time() + 300
    first = int(1.0e6 / TINY_PROTOCOL["timestep_fs"])  # segment 1's first step
    # stopped 60% into the segment: `b` has less to run, `a` still 4 s from the segment's end
    stop_after = first + int(0.6 * first)
    while time.time() < deadline and ((latest_checkpoint_header(work) or {}).get("step") or 0) < stop_after:
        time.sleep(0.05)
    logs = lambda name: "\n".join(p.read_text() for p in (folders[name] / "logs").rglob("*.log"))  # noqa: E731
    assert ((latest_checkpoint_header(work) or {}).get("step") or 0) >= stop_after, logs("a")[-3000:]
    stopped = subprocess.run(
        ["mdcampaign", "sites", "stop", "a", "--now"], cwd=folders["a"], capture_output=True, text=True
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.time() + 120
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.5)
    parked = json.loads((store / "sims" / "ala" / "r1" / "parked" / "parked.json").read_text())
    assert parked["segment"] == 1 and parked["step"] >= stop_after and parked["site"] == "a", parked
    assert claims_of(str(store), "ala/r1")["ended"] == "released"
    assert (store / "claims" / "ala" / "r1" / f"parked-0001+{parked['step']}").exists()
    assert not (store / "sims" / "ala" / "r1" / "segments" / "0001").exists(), "stopped mid-segment"
    status = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=folders["b"], capture_output=True, text=True)
    row = next((line for line in status.stdout.splitlines() if line.startswith("ala/r1")), status.stdout)
    assert "paused" in row, status.stdout  # from any site: its progress is in the store

    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")]
    finished = subprocess.run(command, cwd=folders["b"], capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-5000:]
    assert_exact(str(store), ["ala/r1"], 2, 5.0)
    counts = {name: fetches(folder) for name, folder in folders.items()}
    assert counts["a"] == {("ala/r1", "0000"): 1} and counts["b"] == {("ala/r1", "0001"): 1}, counts
    assert f"segment 1 parked in the store at step {parked['step']}" in logs("a"), logs("a")[-3000:]
    assert f"ala/r1 segment 1: continues from step {parked['step']}, parked in the store by site a" in logs("b")
    assert f"resumed from the portable checkpoint at step {parked['step']}" in logs("b"), logs("b")[-3000:]
    record = json.loads((store / "sims" / "ala" / "r1" / "segments" / "0001" / "segment.json").read_text())
    assert [(run["platform"], run["from_step"]) for run in record["runs"]][-1] == ("CPU", parked["step"])
    assert record["runs"][0]["platform"] == "Reference", record["runs"]
    assert not (store / "sims" / "ala" / "r1" / "parked").exists(), "what was parked goes once its segment is stored"
    assert not list((store / "claims" / "ala" / "r1").glob("parked-*"))
