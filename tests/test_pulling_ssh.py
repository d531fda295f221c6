"""Sites pulling work from one store over real SSH (scripts/ci/sshd-up): two campaign
folders with their own scratch, each running its own real `snakemake`, sharing a
store on the test SSH server. Started together; one killed with kill -9 and never
restarted; one cut off from the store while it runs; one joining late."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEFILE, STRUCTURES, write_campaign
from test_ssh import HOST, SSH_BIN, _in_tree, _processes, remote, remote_root, server_problem, ssh_path  # noqa: F401

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.slow,
    pytest.mark.skipif(server_problem() is not None, reason=str(server_problem())),
]

LEASE_MINUTES = 0.25  # 15 s: renewed every 2.5 s
TRANSFER = {"timeout_seconds": 5, "retries": 3, "retry_delay_seconds": 6}
ALA = STRUCTURES / "alanine-dipeptide.pdb"


def sites(tmp_path: Path, names=("alpha", "beta"), capacity: int = 1) -> dict:
    return {
        name: {"scratch": str(tmp_path / f"scratch-{name}"), "ns_per_day": 100, "capacity": capacity} for name in names
    }


def site_folders(tmp_path: Path, remote_root: str, systems: list[dict], **protocol) -> dict[str, Path]:
    spec = sites(tmp_path)
    return {
        name: write_campaign(
            tmp_path / f"at-{name}",
            systems=systems,
            protocol=protocol or None,
            store=f"{HOST}:{remote_root}",
            sites=spec,
            site=name,
            transfer=TRANSFER,
            pulling={"lease_minutes": LEASE_MINUTES, "poll_seconds": 2},
        )
        for name in spec
    }


def start(directory: Path, path: str) -> subprocess.Popen:
    """A site's `snakemake --profile profiles/local`, in the background."""
    log = open(directory / "snakemake.out", "w")  # noqa: SIM115 - the process writes it while it runs
    return subprocess.Popen(
        ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": path},
    )


def finish(process: subprocess.Popen, directory: Path, timeout: float = 600) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        pytest.fail(f"{directory.name} did not finish:\n{(directory / 'snakemake.out').read_text()[-4000:]}")
    assert code == 0, f"{directory.name} failed:\n{(directory / 'snakemake.out').read_text()[-6000:]}"


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """kill -9 a process and everything it started (Snakemake's jobs and their MD)."""
    table = _processes()
    for victim in [p for p in table if _in_tree(p, pid, table)]:
        try:
            os.kill(victim, sig)
        except ProcessLookupError:
            pass


def store_path(remote_root: str) -> Path:
    """The store as a folder here (the test server is this machine)."""
    return Path(remote_root)


def claims_of(remote_root: str, simulation: str) -> dict:
    """The newest claim of a simulation: generation, holder, ended, segments done."""
    folder = store_path(remote_root) / "claims" / simulation
    if not folder.is_dir():
        return {}
    generations = sorted(p for p in folder.iterdir() if p.name.isdigit())
    done = max((int(p.name.split("-")[1]) for p in folder.glob("segments-*")), default=0)
    if not generations:
        return {"done": done}
    newest = generations[-1]
    holder = next((p.name.split("+", 1)[1] for p in newest.glob("holder+*")), None)
    ended = next((p.name for p in newest.iterdir() if p.name in ("released", "failed")), None)
    return {
        "generation": newest.name,
        "holder": holder,
        "ended": ended,
        "done": done,
        "renewed": newest.stat().st_mtime,
    }


def fetches(directory: Path) -> dict[tuple[str, str], int]:
    """(simulation, segment) -> how many times this site fetched it to the store."""
    counts = {}
    for log in (directory / "logs" / "fetch").glob("*/r*/*.log"):
        for line in log.read_text().splitlines():
            if " INFO fetched " in line:
                words = line.split(" INFO fetched ", 1)[1].split()
                counts[(words[0], words[2])] = counts.get((words[0], words[2]), 0) + 1
    return counts


def assert_exact(remote_root: str, simulations: list[str], segments: int, interval_ps: float) -> None:
    """Every simulation complete in the store, analyzed, with continuous trajectories:
    no gap and no duplicate frame across segments, whichever site ran them."""
    import mdtraj
    import numpy as np

    for name in simulations:
        folder = store_path(remote_root) / "sims" / name
        dirs = sorted(p for p in (folder / "segments").iterdir() if not p.name.startswith("."))
        assert [d.name for d in dirs] == [f"{k:04d}" for k in range(segments)], name
        traj = mdtraj.load([str(d / "trajectory.xtc") for d in dirs], top=str(folder / "trajectory_topology.pdb"))
        assert np.allclose(np.diff(traj.time), interval_ps, atol=1e-3), f"{name}: gap or duplicate frame"
        assert (folder / "analysis" / f"{segments:04d}" / "analysis.json").exists(), name


def test_two_sites_start_together_and_one_killed_for_good_is_taken_over_after_the_lease(
    tmp_path, remote_root, ssh_path
):
    systems = [{"id": "ala", "structure": ALA, "replicas": 4}]
    folders = site_folders(tmp_path, remote_root, systems, target_ns=0.006)
    simulations = [f"ala/r{i}" for i in range(1, 5)]
    alpha, beta = start(folders["alpha"], ssh_path), start(folders["beta"], ssh_path)
    deadline, victim = time.time() + 240, None
    while time.time() < deadline and victim is None:  # alpha holds a simulation it has made progress on
        for sim in simulations:
            claim = claims_of(remote_root, sim)
            if claim.get("holder", "").startswith("alpha+") and not claim["ended"] and claim["done"] >= 1:
                victim = sim
        time.sleep(0.1)
    assert victim, "alpha never held a started simulation"
    kill_tree(alpha.pid)
    killed_at = time.time()
    alpha.wait()
    finish(beta, folders["beta"])
    assert_exact(remote_root, simulations, 3, 0.1)
    taken = claims_of(remote_root, victim)
    assert taken["holder"].startswith("beta+")
    manifests = [
        json.loads((store_path(remote_root) / "sims" / victim / "segments" / f"{k:04d}" / "manifest.json").read_text())
        for k in range(3)
    ]
    assert "alpha" in {m["site"] for m in manifests} and manifests[-1]["site"] == "beta", (
        "beta continued alpha's simulation from its last segment in the store"
    )
    # beta waited for alpha's claim to expire (alpha last renewed it at most a sixth of a lease before the kill)
    pull_logs = "\n".join(p.read_text() for p in (folders["beta"] / "logs" / "pull").rglob("*.log"))
    taken_at = [line for line in pull_logs.splitlines() if f"claimed {victim} " in line][-1]
    stamp = time.mktime(time.strptime(taken_at[:19], "%Y-%m-%d %H:%M:%S"))
    assert stamp - killed_at >= LEASE_MINUTES * 60 * 5 / 6 - 2
    # started together, both worked, and no segment was stored twice (alpha's segment in
    # flight was never stored: beta ran it again from the last stored one)
    counts = {name: fetches(folder) for name, folder in folders.items()}
    assert all(counts.values()), f"both sites did work: {counts}"
    every = [(sim, f"{k:04d}") for sim in simulations for k in range(3)]
    assert {seg: sum(c.get(seg, 0) for c in counts.values()) for seg in every} == dict.fromkeys(every, 1)
    table = (folders["beta"] / "results" / "summary.tsv").read_text()  # the whole campaign, from the store
    assert all(sim in table for sim in simulations)
    status = subprocess.run(
        ["mdcampaign", "status", "--no-slurm"],
        cwd=folders["alpha"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ssh_path},
    )
    assert status.returncode == 0 and "4 done" in status.stdout, status.stdout + status.stderr


def test_a_site_cut_off_from_the_store_and_taken_over_does_not_store_its_segment(tmp_path, remote_root, ssh_path):
    systems = [{"id": "ala", "structure": ALA, "replicas": 1}]
    folders = site_folders(tmp_path, remote_root, systems, segment_ns=0.02, target_ns=0.04)
    cut = tmp_path / "alpha-is-cut-off"
    wrapper = tmp_path / "alpha-bin"
    wrapper.mkdir()
    # alpha's network to the store: the real ssh, unless the link is cut
    (wrapper / "ssh").write_text(
        f"#!/bin/sh\nif [ -e {cut} ]; then echo 'ssh: connect to host {HOST} port 22: "
        f'Connection timed out\' >&2; exit 255; fi\nexec {SSH_BIN / "ssh"} "$@"\n'
    )
    (wrapper / "ssh").chmod(0o755)
    alpha = start(folders["alpha"], f"{wrapper}:{ssh_path}")
    deadline, running = time.time() + 180, None
    while time.time() < deadline and running is None:  # alpha's first segment is running
        table = _processes()
        running = next(
            (
                pid
                for pid, (_, _, argv) in table.items()
                if _in_tree(pid, alpha.pid, table) and "simulate" in argv and len(argv) > 3
            ),
            None,
        )
        time.sleep(0.05)
    assert running, "alpha never started a segment"
    cut.touch()
    os.kill(running, signal.SIGSTOP)  # and its segment does not end before the link is back
    beta = start(folders["beta"], ssh_path)
    deadline = time.time() + 240
    while time.time() < deadline and not claims_of(remote_root, "ala/r1").get("holder", "").startswith("beta+"):
        time.sleep(0.2)
    assert claims_of(remote_root, "ala/r1")["holder"].startswith("beta+"), "beta never took over"
    cut.unlink()
    os.kill(running, signal.SIGCONT)
    finish(beta, folders["beta"])
    finish(alpha, folders["alpha"])
    assert_exact(remote_root, ["ala/r1"], 2, 0.1)
    assert not fetches(folders["alpha"]), "alpha stored nothing"
    assert fetches(folders["beta"]) == {("ala/r1", "0000"): 1, ("ala/r1", "0001"): 1}
    pull_logs = "\n".join(p.read_text() for p in (folders["alpha"] / "logs" / "pull").rglob("*.log"))
    assert "taken over" in pull_logs + "\n".join(p.read_text() for p in (folders["alpha"] / "logs").rglob("*.log"))


def test_a_site_joining_late_takes_a_share(tmp_path, remote_root, ssh_path):
    systems = [{"id": "ala", "structure": ALA, "replicas": 6}]
    folders = site_folders(tmp_path, remote_root, systems)
    simulations = [f"ala/r{i}" for i in range(1, 7)]
    alpha = start(folders["alpha"], ssh_path)
    deadline = time.time() + 240
    while time.time() < deadline and sum(claims_of(remote_root, s).get("ended") == "released" for s in simulations) < 1:
        time.sleep(0.2)
    beta = start(folders["beta"], ssh_path)
    finish(alpha, folders["alpha"])
    finish(beta, folders["beta"])
    assert_exact(remote_root, simulations, 2, 0.1)
    alpha_did, beta_did = fetches(folders["alpha"]), fetches(folders["beta"])
    assert beta_did, "the late site took a share"
    assert not set(alpha_did) & set(beta_did) and len(alpha_did) + len(beta_did) == 12


def test_over_ssh_a_holder_that_lost_its_claim_stores_nothing(tmp_path, remote_root):
    from mdcampaign.claims import ClaimBoard
    from mdcampaign.errors import TransferError
    from mdcampaign.store import SshStore, TransferSettings

    store = SshStore(HOST, remote_root, TransferSettings.of(timeout_seconds=5, retries=0))
    board = ClaimBoard(store, 8)  # the new holder stores within half of it
    old = board.claim("sys/r1", 2, "alpha+far-1.s0").lease
    time.sleep(9.5)
    new = board.claim("sys/r1", 2, "beta+near-2.s0").lease
    made = tmp_path / "system.xml"
    made.write_text("alpha's system")
    with pytest.raises(TransferError, match="lease lost: another site took over sys/r1"):
        store.put_directory({"system.xml": made}, "sims/sys/r1/segments/0000", guard=board.guard_script(old))
    assert not (store_path(remote_root) / "sims/sys/r1/segments/0000").exists()
    remote(f'mkdir -p {remote_root}/sims/sys/r1 && echo "beta\'s system" > {remote_root}/sims/sys/r1/system.xml')
    with pytest.raises(TransferError, match="lease lost"):
        store.pin(made, "sims/sys/r1/system.xml", "0" * 64, guard=board.guard_script(old))
    assert (store_path(remote_root) / "sims/sys/r1/system.xml").read_text() == "beta's system\n"
    assert board.renew([new]) == set()
    store.put_directory({"system.xml": made}, "sims/sys/r1/segments/0000", guard=board.guard_script(new))
    assert (store_path(remote_root) / "sims/sys/r1/segments/0000/system.xml").exists()


def test_over_ssh_a_paused_segment_is_parked_by_its_holder_only_and_taken_where_it_goes_on(
    tmp_path, remote_root, prepared_ala
):
    """parking.py over a real SSH store: the holder parks a paused OpenMM segment (its
    frames, rows and portable checkpoint) and marks it in the claims; a holder that lost
    its claim parks nothing; a taker gets the same files, checksum-verified, unless its
    own checkpoint is as far."""
    from mdcampaign.claims import ClaimBoard
    from mdcampaign.engines.openmm import OpenMMEngine
    from mdcampaign.errors import TransferError
    from mdcampaign.parking import park, unpark
    from mdcampaign.store import SshStore, TransferSettings
    from test_segment import protocol_with, segment_command

    setup_dir, base = prepared_ala
    protocol = protocol_with(base, segment_ns=0.1, target_ns=0.1, frame_interval_ps=0.5, checkpoint_interval_ps=10.0)
    work = tmp_path / "a" / "work"
    command = segment_command(setup_dir, protocol, work, extra=("--budget-seconds", "0.8"))
    paused = subprocess.run(command, capture_output=True, text=True)
    assert paused.returncode == 75, paused.stderr
    engine = OpenMMEngine()
    step, files = engine.parked(work)

    store = SshStore(HOST, remote_root, TransferSettings.of(timeout_seconds=5, retries=0))
    board = ClaimBoard(store, 8)
    old = board.claim("ala/r1", 2, "a+host-1.s0").lease
    time.sleep(9.5)
    new = board.claim("ala/r1", 2, "b+host-2.s0").lease
    with pytest.raises(TransferError, match="lease lost"):
        park(store, board, old, engine, work, 0, "a")
    assert not (store_path(remote_root) / "sims/ala/r1/parked").exists()
    assert park(store, board, new, engine, work, 0, "b") == step
    assert board.listing().of("ala/r1").parked == [0, step]

    there = tmp_path / "c" / "work"
    assert unpark(store, "ala/r1", 0, step, engine, there, tmp_path / "cache")
    assert sorted(p.name for p in there.iterdir()) == sorted(f.name for f in files)
    for f in files:
        assert (there / f.name).read_bytes() == f.read_bytes(), f.name
    assert not unpark(store, "ala/r1", 0, step, engine, work, tmp_path / "cache"), "its own checkpoint is as far"
