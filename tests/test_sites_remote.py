"""Every machine from one workstation (`mdcampaign sites deploy | start | stop | logs`),
over real SSH: scripts/ci/sshd-up's users mdsite1 and mdsite2 (aliases site1, site2)
stand in for two machines' login nodes, each with its own home and nothing of the
project installed; site2 submits through the real test Slurm cluster. The campaign
folder here is the workstation's, which is a site too."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, STRUCTURES, write_campaign
from test_pulling_ssh import assert_exact, fetches
from test_ssh import HOST, SSH_BIN, STORE_ROOT, remote, server_problem

MACHINES = {"site1": "mdsite1", "site2": "mdsite2"}  # ssh alias: its user (scripts/ci/sshd-up)
TRANSFER = {"timeout_seconds": 5, "retries": 3, "retry_delay_seconds": 6}


def machines_problem() -> str | None:
    problem = server_problem()
    if problem:
        return problem
    for alias in MACHINES:
        result = subprocess.run([str(SSH_BIN / "ssh"), alias, "true"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            return f"the test SSH server has no site user {alias} ({result.stderr.strip()[:120]}); rerun scripts/ci/sshd-up"
    return None


def slurm_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "no Slurm client (run scripts/ci/slurm-up)"
    result = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    return None if result.returncode == 0 and result.stdout.strip() else "the test Slurm cluster does not answer"


pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(machines_problem() is not None, reason=str(machines_problem())),
]


def home_of(alias: str) -> Path:
    return Path(pwd.getpwnam(MACHINES[alias]).pw_dir)


@pytest.fixture(scope="session")
def dependency_wheels(tmp_path_factory) -> Path:
    """mdcampaign's dependencies as wheels, made once per test run: what `deploy
    --wheels` carries to machines without a package index."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(folder), str(REPO)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    for own in folder.glob("mdcampaign-*.whl"):  # deploy carries its own build
        own.unlink()
    return folder


@pytest.fixture
def workstation(tmp_path, monkeypatch):
    """The environment of the lab's workstation: plain `ssh site1` reaches the machines."""
    monkeypatch.setenv("PATH", f"{SSH_BIN}:{os.environ['PATH']}")
    return {**os.environ, "PATH": f"{SSH_BIN}:{os.environ['PATH']}"}


@pytest.fixture
def campaign_id():
    """A campaign's name on the machines and in the store; everything of it is removed
    afterwards (its drivers and their jobs stopped by pid)."""
    name = f"c{uuid.uuid4().hex[:8]}"
    yield name
    for alias in MACHINES:
        folder = home_of(alias) / "campaigns" / name
        _stop_driver(folder)
        log = folder / "logs" / "driver.log"
        if log.exists():  # shown by pytest when the test failed
            print(f"===== {alias}: {log}", *log.read_text(errors="replace").splitlines()[-25:], sep="\n")
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["scancel", "-u", MACHINES["site2"]], capture_output=True, timeout=30, check=False)
    remote(f"rm -rf {STORE_ROOT}/{name}", check=False)


def _stop_driver(folder: Path) -> None:
    try:
        pid = int((folder / ".mdcampaign" / "driver.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def mdcampaign(directory: Path, env: dict, *arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mdcampaign", *arguments], cwd=directory, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_site_campaign(directory: Path, name: str, sites: dict, replicas: int = 1, **protocol) -> Path:
    """A campaign whose files are all inside its folder (as sites deploy needs)."""
    (directory / "structures").mkdir(parents=True, exist_ok=True)
    shutil.copy(STRUCTURES / "alanine-dipeptide.pdb", directory / "structures")
    return write_campaign(
        directory,
        systems=[{"id": "ala", "structure": "structures/alanine-dipeptide.pdb", "replicas": replicas}],
        protocol=protocol or None,
        campaign=name,
        store=f"{HOST}:{STORE_ROOT}/{name}",
        sites=sites,
        site=next(iter(sites)),
        transfer=TRANSFER,
        pulling={"lease_minutes": 0.25, "poll_seconds": 2},
    )


def remote_site(alias: str, name: str, **more) -> dict:
    # two ways of naming the folder: relative to the home folder, and with a variable there
    path = f"campaigns/{name}" if alias == "site1" else f"$HOME/campaigns/{name}"
    return {"host": alias, "path": path, "ns_per_day": 100, "capacity": 1, **more}


def beats(name: str) -> dict[str, dict]:
    out = remote(f'cd {STORE_ROOT}/{name}/sites 2>/dev/null && for f in *.json; do cat "$f"; done', check=False)
    found = {}
    for line in out.splitlines():
        if line.strip():
            record = json.loads(line)
            found[record["site"]] = record
    return found


def wait_for(condition, timeout: float, what: str, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(slurm_problem() is not None, reason=str(slurm_problem()))
def test_three_sites_deployed_started_one_killed_restarted_by_start_all_and_the_campaign_completes_exact(
    tmp_path, workstation, campaign_id, dependency_wheels
):
    here = tmp_path / "workstation"
    sites = {
        "here": {"ns_per_day": 100, "capacity": 1, "scratch": str(tmp_path / "scratch"), "profile": "local"},
        "one": remote_site("site1", campaign_id, profile="local"),
        "two": remote_site("site2", campaign_id, profile="ci-slurm"),
    }
    write_site_campaign(here, campaign_id, sites, replicas=4, target_ns=0.006)

    # deploy: both machines from nothing; the second deploy changes nothing
    started = time.time()
    first = mdcampaign(here, workstation, "sites", "deploy", "--wheels", str(dependency_wheels))
    deploy_seconds = time.time() - started
    assert first.returncode == 0, first.stdout + first.stderr
    for site, alias in (("one", "site1"), ("two", "site2")):
        assert f"site {site}: installing mdcampaign build" in first.stdout
        written = re.search(
            rf"site {site}: deployed to {alias}:{home_of(alias) / 'campaigns' / campaign_id} "
            r"\(build \w+, (\d+) files written\)",
            first.stdout,
        )
        assert written and int(written[1]) >= 5, first.stdout
        folder = home_of(alias) / "campaigns" / campaign_id
        assert (folder / "structures" / "alanine-dipeptide.pdb").exists()
        assert (folder / "profiles" / sites[site]["profile"] / "config.yaml").exists()
        assert (folder / "workflow" / "Snakefile").exists()
        assert (folder / ".mdcampaign" / "venv" / "bin" / "snakemake").exists()
    assert "doctor: FAIL" not in first.stdout, first.stdout
    # a site's own edit to its profile, and its own files, survive every later deploy
    edited = home_of("site2") / "campaigns" / campaign_id / "profiles" / "ci-slurm" / "config.yaml"
    edited.write_text(edited.read_text() + "# slurm_account: my-allocation\n")
    own = home_of("site1") / "campaigns" / campaign_id / "notes.txt"
    own.write_text("mine\n")
    shutil.chown(own, MACHINES["site1"], MACHINES["site1"])
    second = mdcampaign(here, workstation, "sites", "deploy", "--wheels", str(dependency_wheels))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "site one: up to date" in second.stdout and "site two: up to date" in second.stdout, second.stdout
    assert "my-allocation" in edited.read_text() and own.exists()

    # a machine holding another build is refused in one line that says how to fix it
    build_file = home_of("site1") / "campaigns" / campaign_id / ".mdcampaign" / "build"
    kept = build_file.read_text()
    build_file.write_text("0123456789abcdef\n")
    refused = mdcampaign(here, workstation, "sites", "start", "one")
    assert refused.returncode == 1
    assert re.search(
        r"site one \(site1\) has mdcampaign build 0123456789abcdef, this is build \w+: run "
        r"`mdcampaign sites deploy one`",
        refused.stdout,
    ), refused.stdout
    build_file.write_text(kept)

    # start every site: one driver each, detached
    start = mdcampaign(here, workstation, "sites", "start")
    assert start.returncode == 0, start.stdout + start.stderr
    assert start.stdout.count("driver started") == 3, start.stdout
    again = mdcampaign(here, workstation, "sites", "start", "one")
    assert "already runs" in again.stdout, again.stdout
    wait_for(lambda: set(beats(campaign_id)) == {"here", "one", "two"}, 120, "every site's heartbeat")

    # site one's login node dies (its driver and everything it started, kill -9) once it holds work
    def one_holds_work():
        record = beats(campaign_id).get("one", {})
        return record if record.get("jobs", {}).get("running") else None

    record = wait_for(one_holds_work, 240, "site one running a job")
    os.killpg(record["pid"], signal.SIGKILL)
    status = wait_for(
        lambda: (
            s
            if "its driver is silent: restart it with `mdcampaign sites start one`"
            in (s := mdcampaign(here, workstation, "status", "--no-slurm")).stdout
            else None
        ),
        90,
        "status to show site one silent",
        poll=3,
    )
    lines = {
        line.split()[0]: line for line in status.stdout.splitlines() if line.split()[:1] in (["here"], ["one"], ["two"])
    }
    assert "silent" in lines["one"] and "alive" in lines["here"] and "alive" in lines["two"], status.stdout

    # the keep-alive: start --all starts the silent one, and only that one
    revived = mdcampaign(here, workstation, "sites", "start", "--all")
    assert revived.returncode == 0, revived.stdout + revived.stderr
    assert "site one: driver started" in revived.stdout and "site here" not in revived.stdout, revived.stdout
    assert "site two" not in revived.stdout, revived.stdout
    logs = mdcampaign(here, workstation, "sites", "logs", "one")
    assert "mdcampaign sites start" not in logs.stdout or "snakemake" in logs.stdout, logs.stdout

    # the campaign completes, exact: every segment stored once, whichever site ran it
    wait_for(
        lambda: all(b.get("state") == "finished" for b in beats(campaign_id).values()) and len(beats(campaign_id)) == 3,
        600,
        "every driver to finish",
        poll=3,
    )
    simulations = [f"ala/r{i}" for i in range(1, 5)]
    assert_exact(f"{STORE_ROOT}/{campaign_id}", simulations, 3, 0.1)
    folders = [here] + [home_of(alias) / "campaigns" / campaign_id for alias in MACHINES]
    counts = [fetches(folder) for folder in folders]
    every = [(sim, f"{k:04d}") for sim in simulations for k in range(3)]
    assert {seg: sum(c.get(seg, 0) for c in counts) for seg in every} == dict.fromkeys(every, 1), counts
    # site one worked until its kill (its segment in progress then went to whoever took it over)
    assert any(counts[1:]), f"the machines did work: {counts}"
    print(f"deploy of two fresh sites: {deploy_seconds:.0f} s")


def test_each_deploy_problem_is_one_line_naming_the_site(tmp_path, workstation, campaign_id):
    here = tmp_path / "workstation"
    sites = {
        "here": {"ns_per_day": 100, "capacity": 1},
        "badsetup": {**remote_site("site1", campaign_id), "setup": ["module load python3/3.99"]},
        "nopython": {**remote_site("site1", campaign_id), "python": "python3.99"},
        "badpath": {**remote_site("site2", campaign_id), "path": "/proc/campaigns/x"},
        "unreachable": {**remote_site("site1", campaign_id), "host": "no-such-machine"},
    }
    write_site_campaign(here, campaign_id, sites)
    result = mdcampaign(here, workstation, "sites", "deploy")
    assert result.returncode == 1
    failures = {line.split()[2]: line for line in result.stdout.splitlines() if line.startswith("FAILED: site ")}
    assert set(failures) == {"badsetup", "nopython", "badpath", "unreachable"}, result.stdout
    assert "its setup lines failed there (module load python3/3.99)" in failures["badsetup"]
    assert "no Python 3.11 or newer as 'python3.99' there" in failures["nopython"]
    assert "its campaign folder (path: /proc/campaigns/x) cannot be made or entered there" in failures["badpath"]
    assert "ssh cannot reach it" in failures["unreachable"] and "no-such-machine" in failures["unreachable"]
    assert "Traceback" not in result.stdout + result.stderr
    # nothing was installed anywhere, and nothing ran: no driver to start
    start = mdcampaign(here, workstation, "sites", "start", "nopython")
    assert start.returncode == 1 and start.stdout.startswith("FAILED: site nopython (site1)"), start.stdout


def test_a_site_refuses_another_campaign_definition_than_the_stores(tmp_path, workstation, campaign_id):
    """Two sites never run different protocols for one simulation: a site whose config
    differs from the store's copy (deploy records it) stops in one line."""
    here = tmp_path / "workstation"
    sites = {"here": {"ns_per_day": 100, "capacity": 1, "scratch": str(tmp_path / "scratch")}}
    write_site_campaign(here, campaign_id, sites, target_ns=0.004)
    recorded = mdcampaign(here, workstation, "sites", "deploy")
    assert recorded.returncode == 0 and "definition is recorded" in recorded.stdout, recorded.stdout
    config = yaml.safe_load((here / "config" / "config.yaml").read_text())
    config["protocol"]["target_ns"] = 0.006
    (here / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "--profile", str(REPO / "profiles" / "local"), "-s", str(REPO / "workflow" / "Snakefile")],
        cwd=here,
        env=workstation,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    said = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("mdcampaign:")]
    assert said and "systems.ala.protocol.target_ns: 0.006 here, 0.004 in the store" in said[0], said
    assert "run `mdcampaign sites deploy`" in said[0]
