"""The workflow on a real Slurm cluster (scripts/ci/slurm-up): jobs really go through
sbatch to the partitions the profile names, a segment longer than its time limit
completes over several jobs, and a failing job tells the user what failed and where.

Skipped, with the reason, when no cluster answers (e.g. on a laptop)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, SNAKEFILE, assert_complete, make_profile, report, run_with_profile, snakemake, write_campaign

CI_DIR = Path(os.environ.get("MDCAMPAIGN_CI_DIR", "/tmp/mdcampaign-ci"))
JOBCOMP = CI_DIR / "slurm" / "jobcomp.log"


def cluster_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "Slurm client tools are not installed"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out (no slurmctld answering)"
    if result.returncode != 0:
        return f"no Slurm cluster answers: {result.stderr.strip()[:200]} (start one with scripts/ci/slurm-up)"
    partitions = {line.split()[0].rstrip("*") for line in result.stdout.splitlines() if line.strip()}
    if not {"normal", "long"} <= partitions or not JOBCOMP.parent.exists():
        return "the running Slurm cluster is not the test cluster of scripts/ci/slurm-up"
    return None


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(cluster_problem() is not None, reason=str(cluster_problem())),
]


def slurm_jobs(campaign: Path) -> dict[str, list[str]]:
    """Slurm job ids per rule, from the plugin's per-job log files."""
    jobs: dict[str, list[str]] = {}
    for log in (campaign / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"):
        rule = log.relative_to(campaign / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        jobs.setdefault(rule, []).append(log.stem)
    return jobs


def slurm_record(job_id: str) -> dict[str, str]:
    """Slurm's own record of a finished job (the job-completion log)."""
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("JobId") == job_id:
            return fields
    raise AssertionError(f"job {job_id} is not in Slurm's job-completion log")


def test_campaign_runs_through_slurm_on_the_profiles_partitions(tiny_campaign):
    run_with_profile(tiny_campaign, REPO / "profiles" / "ci-slurm")
    assert_complete(tiny_campaign, {"ala/r1": 0.004, "ala/r2": 0.004, "ala-water/r1": 0.004})
    jobs = slurm_jobs(tiny_campaign)
    assert set(jobs) == {"setup", "simulate", "analyze"}, "stage, fetch and summary run on the login node"
    assert len(jobs["simulate"]) == 6 and len(jobs["setup"]) == 2 and len(jobs["analyze"]) == 3
    for rule, partition in (("simulate", "long"), ("setup", "normal"), ("analyze", "normal")):
        for job_id in jobs[rule]:
            record = slurm_record(job_id)
            assert record["JobState"] == "COMPLETED" and record["Partition"] == partition, record
    # the segment runner saw that it ran inside those Slurm jobs
    manifest = json.loads((tiny_campaign / "results/sims/ala/r1/segments/0000/manifest.json").read_text())
    assert manifest["info"]["runs"][0]["slurm_job_id"] in jobs["simulate"]
    local = run_with_profile(tiny_campaign, REPO / "profiles" / "ci-slurm", "-n")
    assert "Nothing to be done" in local.stdout + local.stderr


def cluster_steps_per_second(prepared: Path, protocol, slots: int) -> float:
    """How fast a job integrates the test system on this cluster, one thread per
    simulation and ``slots`` of them side by side, measured inside one real Slurm job
    (inside a job the speed differs from the test's own process: OpenMM's CPU platform
    with one thread, unpinned, ran 5x slower with a core idle beside it than with both
    busy or pinned; and this machine's speed swings from minute to minute). The fastest
    slot, in steps per second."""
    import shlex
    import sys
    import uuid

    setup = prepared / "setup.json"
    if not setup.exists():
        setup.write_text(json.dumps({"engine": "openmm", "protocol": protocol.record()}))
    out = prepared / f"speed-{uuid.uuid4().hex[:8]}.txt"
    probe = [sys.executable, "-m", "mdcampaign.tune", str(prepared), "CPU", "1", "8"]
    # side by side, each pinned to its own core as a packed job's slots are (one alone: unpinned)
    pins = [f"MDCAMPAIGN_SLOT={i} MDCAMPAIGN_SLOT_CORES={i} " if slots > 1 else "" for i in range(slots)]
    slots_command = " & ".join(f"{pin}{shlex.join(probe)} >> {shlex.quote(str(out))}" for pin in pins)
    subprocess.run(
        ["sbatch", "--wait", "-p", "long", f"--cpus-per-task={slots}", "-t", "3", "-o", "/dev/null"]
        + ["--wrap", f"{slots_command} & wait"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return max(float(line) for line in out.read_text().split()) / 86400 / (protocol.timestep_fs * 1e-6)


def test_segment_longer_than_its_time_limit_completes_over_several_jobs(tmp_path, prepared_ala):
    # Every simulate job gets one minute, of which ~40 s are left for MD once Snakemake
    # has started inside the job; the segment needs ~80 s of MD at the fastest speed
    # just measured in the cluster, so at least two jobs even if the job runs 1.5x
    # faster than the measurement (which a busy moment can slow: it once fit in one
    # job at 60 s). Its length is a multiple of the checkpoint interval (50 ps).
    checkpoint_steps = 12_500
    steps = (
        max(2, math.ceil(80 * cluster_steps_per_second(*prepared_ala, slots=1) / checkpoint_steps)) * checkpoint_steps
    )
    segment_ns = round(steps * 4e-6, 6)
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
        protocol={
            "segment_ns": segment_ns,
            "target_ns": segment_ns,
            "frame_interval_ps": 10.0,
            "checkpoint_interval_ps": 50.0,
        },
    )
    profile = make_profile(tmp_path, "ci-slurm", config={"max_runtime_minutes": 1})
    for _ in range(5):  # each run submits the segment up to 1 + retries times; out of retries, run again
        result = run_with_profile(campaign, profile, check=False, timeout=1200)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert_complete(campaign, {"ala/r1": segment_ns})
    info = json.loads((campaign / "results/sims/ala/r1/segments/0000/segment.json").read_text())
    job_ids = [run["slurm_job_id"] for run in info["runs"]]
    assert len(set(job_ids)) >= 2, f"expected the segment to span several Slurm jobs, got {job_ids}"
    first = slurm_record(job_ids[0])
    assert first["TimeLimit"] == "1"
    # the first job either stopped itself before the limit (exit 75) or was killed by it
    assert first["JobState"] in ("FAILED", "TIMEOUT"), first
    assert info["runs"][0]["stop_reason"].startswith(("time budget", "signal SIGTERM")), info["runs"][0]
    # what the first job said is kept in its Slurm log (Snakemake replaces the rule log on retry)
    first_log = next((campaign / ".snakemake" / "slurm_logs").glob(f"rule_simulate/**/{job_ids[0]}.log"))
    assert "PAUSED: ala/r1 segment 0000 stopped at step" in first_log.read_text()
    assert "resumed from checkpoint" in (campaign / "logs/simulate/ala/r1/0000.log").read_text()


def test_a_failing_job_shows_simulation_rule_slurm_state_and_log(tmp_path):
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
    )
    snakemake(campaign, "results/systems/ala/setup.json")  # set up locally, on the CPU
    # a GPU profile used on a cluster without GPUs: simulate must fail, clearly
    profile = make_profile(tmp_path, "ci-slurm", config={"platform": "CUDA"}, retries=0)
    result = run_with_profile(campaign, profile, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule simulate" in output
    assert re.search(r"wildcards: system=ala, replica=1, segment=0000", output)
    assert re.search(r"SLURM status is: '?FAILED'?", output), output[-3000:]
    assert "logs/simulate/ala/r1/0000.log" in output
    assert "OpenMM platform 'CUDA' was requested but is not usable here" in output


def test_status_shows_slurm_jobs_of_a_running_campaign(tmp_path):
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol={"segment_ns": 1.0, "target_ns": 1.0, "frame_interval_ps": 10.0, "checkpoint_interval_ps": 50.0},
    )
    process = subprocess.Popen(
        ["snakemake", "-s", str(REPO / "workflow/Snakefile"), "--profile", str(REPO / "profiles/ci-slurm")],
        cwd=campaign,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        seen = None
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and seen is None:
            result = subprocess.run(["mdcampaign", "status", "--json"], cwd=campaign, capture_output=True, text=True)
            report = json.loads(result.stdout)
            seen = next((s for s in report["simulations"] if s["slurm"] and s["slurm"]["rule"] == "simulate"), None)
            time.sleep(1)
        assert seen is not None, "no simulate job was seen in Slurm's queue"
        assert seen["slurm"]["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
        assert seen["slurm"]["job_id"].isdigit()
        text = subprocess.run(["mdcampaign", "status"], cwd=campaign, capture_output=True, text=True).stdout
        assert "slurm job" in text
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Snakemake cancels its Slurm jobs
        process.wait(timeout=120)


def test_doctor_names_a_partition_that_does_not_exist_and_the_fix(tmp_path):
    campaign = write_campaign(tmp_path / "campaign")
    profile = make_profile(tmp_path, "ci-slurm", **{"set-resources": {"simulate": {"slurm_partition": "gpu-a100"}}})
    result = subprocess.run(
        ["mdcampaign", "doctor", "--profile", str(profile)], cwd=campaign, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "FAIL  partition 'gpu-a100'" in result.stdout
    assert "to one of: long, normal" in result.stdout
    assert "PASS  partition 'normal' exists" in result.stdout
    ok = subprocess.run(
        ["mdcampaign", "doctor", "--profile", str(REPO / "profiles" / "ci-slurm")],
        cwd=campaign,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout


def test_a_packed_job_runs_two_simulations_at_once_and_the_next_job_continues_them(tmp_path, prepared_ala):
    # Two slots of one thread on the test node's two cores, each simulation four
    # segments of ~15 s of MD at the fastest speed just measured; a job gets one
    # minute (~45 s of MD once it has started), so the batch needs at least two jobs,
    # each running both simulations side by side and going on with their next segments.
    checkpoint_steps = 2_500
    speed = cluster_steps_per_second(*prepared_ala, slots=2)
    steps = max(1, math.ceil(15 * speed / checkpoint_steps)) * checkpoint_steps
    segment_ns = round(steps * 4e-6, 6)
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol={
            "segment_ns": segment_ns,
            "target_ns": round(4 * segment_ns, 6),
            "frame_interval_ps": 2.0,
            "checkpoint_interval_ps": 10.0,
        },
    )
    profile = make_profile(
        tmp_path, "ci-slurm", config={"max_runtime_minutes": 1, "packing": {"slots": 2, "threads": 1}}
    )
    for _ in range(6):  # each run submits the batch up to 1 + retries times; out of retries, run again
        result = run_with_profile(campaign, profile, check=False, timeout=1200)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert_complete(campaign, {"ala/r1": 4 * segment_ns, "ala/r2": 4 * segment_ns})
    assert set(slurm_jobs(campaign)) == {"setup", "pack", "analyze"}, "no per-segment jobs"
    runs = {}  # Slurm job -> [(simulation, slot, start, end)] from the segment records
    for manifest in campaign.glob("results/sims/ala/r*/segments/*/manifest.json"):
        record = json.loads(manifest.read_text())
        for run in record["info"]["runs"]:
            start = datetime.fromisoformat(run["started_at"]).timestamp()
            runs.setdefault(run["slurm_job_id"], []).append(
                (record["simulation"], run["slot"]["slot"], start, start + run["wall_seconds"])
            )
    assert len(runs) >= 2, f"the batch continued in a second job: {sorted(runs)}"
    first_job = min(runs, key=lambda job: min(r[2] for r in runs[job]))
    assert slurm_record(first_job)["Partition"] == "long"
    in_first = runs[first_job]
    assert {r[0] for r in in_first} == {"ala/r1", "ala/r2"} and {r[1] for r in in_first} == {0, 1}
    assert len(in_first) >= 3, "a slot went on with the next segment in the same job"
    r1 = [r for r in in_first if r[0] == "ala/r1"]
    r2 = [r for r in in_first if r[0] == "ala/r2"]
    assert min(max(r[3] for r in r1), max(r[3] for r in r2)) > max(min(r[2] for r in r1), min(r[2] for r in r2)), (
        "both simulations ran at the same time in one job"
    )


def test_openmm_and_gromacs_simulations_share_a_packed_slurm_job(tmp_path):
    from mdcampaign.engines.gromacs import gmx

    if gmx.available() is None:
        pytest.skip("GROMACS is not installed (gmx not found): apt-get install gromacs")
    structure = REPO / "config/structures/alanine-dipeptide.pdb"
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {"id": "ala", "structure": structure, "replicas": 1},
            {
                "id": "ala-gmx",
                "structure": structure,
                "replicas": 1,
                "engine": "gromacs",
                "solvent": "explicit",
                "forcefield": "amber99sbildn",
                "water_model": "tip3p",
            },
        ],
    )
    profile = make_profile(tmp_path, "ci-slurm", config={"packing": {"slots": 2, "threads": 1}})
    run_with_profile(campaign, profile, timeout=1200)
    assert_complete(campaign, {"ala/r1": 0.004, "ala-gmx/r1": 0.004})
    jobs = slurm_jobs(campaign)
    assert set(jobs) == {"setup", "pack", "analyze"}, "no per-segment jobs"
    slots = {}
    for manifest in campaign.glob("results/sims/*/r1/segments/*/manifest.json"):
        record = json.loads(manifest.read_text())
        for run in record["info"]["runs"]:
            assert run["slurm_job_id"] in jobs["pack"]
            slots.setdefault(record["protocol"].get("engine", "openmm"), set()).add(run["slot"]["slot"])
    assert set(slots) == {"openmm", "gromacs"} and all(len(s) == 1 for s in slots.values())
    assert slots["openmm"] != slots["gromacs"], "each simulation kept its own slot"


def test_a_cluster_site_and_a_workstation_site_pull_one_campaign(tmp_path):
    """Two sites share a store (a shared folder): one runs packed pull jobs through
    Slurm, the other pulls on this machine; both take work, each segment runs once."""
    systems = [{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 8}]
    store = tmp_path / "store"
    sites = {
        "cluster": {"scratch": str(tmp_path / "scratch-cluster"), "capacity": 2, "ns_per_day": 100},
        "desk": {"scratch": str(tmp_path / "scratch-desk"), "capacity": 1, "ns_per_day": 100},
    }
    common = {"store": str(store), "sites": sites, "pulling": {"lease_minutes": 0.5, "poll_seconds": 2}}
    cluster = write_campaign(tmp_path / "at-cluster", systems=systems, **common)
    desk = write_campaign(tmp_path / "at-desk", systems=systems, site="desk", **common)
    profile = make_profile(tmp_path, "ci-slurm", config={"site": "cluster", "packing": {"slots": 2, "threads": 1}})
    at_cluster = subprocess.Popen(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile)],
        cwd=cluster,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300  # the desk joins once the cluster's first job has claimed work
    while time.time() < deadline and not list(store.glob("claims/ala/r*/*/holder+cluster+*")):
        time.sleep(0.2)
    at_desk = subprocess.Popen(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(REPO / "profiles" / "local")],
        cwd=desk,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for process in (at_cluster, at_desk):
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, out[-4000:]
    assert set(slurm_jobs(cluster)) == {"setup", "pull"}, "segments and analyses ran inside the pull jobs"
    fetched = {}
    for site in (cluster, desk):
        for log in (site / "logs" / "fetch").glob("ala/r*/*.log"):
            lines = [line for line in log.read_text().splitlines() if " INFO fetched " in line]
            fetched[(log.parent.name, log.stem)] = fetched.get((log.parent.name, log.stem), 0) + len(lines)
    assert fetched == {(f"r{r}", f"{k:04d}"): 1 for r in range(1, 9) for k in range(2)}
    worked = {json.loads(path.read_text())["site"] for path in store.glob("sims/ala/r*/segments/*/manifest.json")}
    assert worked == {"cluster", "desk"}
    for site in (cluster, desk):
        assert_complete(site, {f"ala/r{r}": 0.004 for r in range(1, 9)}, store=store)


# -- the controller goes away ------------------------------------------------------------

CONTROLLER_PID = CI_DIR / "slurm" / "run" / "slurmctld.pid"


def stop_controller() -> None:
    """Stop the test cluster's slurmctld (by its pid file). SIGTERM: it saves its state
    first (a SIGKILL just after a submission can lose that job and hand its id out
    again, which drains the node: "Duplicate jobid"; a lost job is a job Slurm never
    answers about again, which the patience below covers as well)."""
    os.kill(int(CONTROLLER_PID.read_text()), signal.SIGTERM)
    while controller_running():
        time.sleep(0.1)


def controller_running() -> bool:
    try:
        status = Path(f"/proc/{int(CONTROLLER_PID.read_text())}/status").read_text()
    except (OSError, ValueError):
        return False
    return "zombie" not in status.lower()


def start_controller() -> None:
    """Start slurmctld again as scripts/ci/slurm-up does (same config, same state)."""
    subprocess.run(["/usr/sbin/slurmctld", "-f", "/etc/slurm/slurm.conf"], check=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
        if "UP" in ping.stdout:
            return
        time.sleep(0.5)
    raise AssertionError("slurmctld did not come back")


def wait_for_text(path: Path, text: str, timeout: float, after: int = 0) -> int:
    """Wait until ``text`` appears in the file (past offset ``after``); its offset."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        content = path.read_text() if path.exists() else ""
        found = content.find(text, after)
        if found >= 0:
            return found
        time.sleep(0.2)
    raise AssertionError(f"'{text}' never appeared in {path}:\n{(path.read_text() if path.exists() else '')[-3000:]}")


def wait_until_running(count: int, timeout: float) -> None:
    """Until at least ``count`` jobs of the cluster are running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout
        if len(running.split()) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} jobs ever ran at once")


def jobs_of_segments(campaign: Path) -> dict[str, list[str]]:
    """Slurm job ids per simulate job (system_replica_segment), from the plugin's logs."""
    jobs: dict[str, list[str]] = {}
    for log in (campaign / ".snakemake" / "slurm_logs" / "rule_simulate").glob("*/*.log"):
        jobs.setdefault(log.parent.name, []).append(log.stem)
    return jobs


def test_a_controller_outage_mid_campaign_loses_nothing_and_the_run_ends_by_itself(tmp_path):
    """slurmctld killed twice mid-campaign (jobs running and pending): a short outage
    (40 s) is ridden out (the run follows its jobs again); a long one outlasts the
    run's patience (45 s here), which stops with one line naming the jobs it lost
    sight of, cancelling nothing; the controller comes back, the same command then
    finishes, exact, and no segment ever ran in two jobs at once."""
    systems = [{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 3}]
    protocol = {"segment_ns": 0.06, "target_ns": 0.12, "frame_interval_ps": 2.0, "checkpoint_interval_ps": 10.0}
    campaign = write_campaign(tmp_path / "campaign", systems=systems, protocol=protocol)
    profile = make_profile(
        tmp_path, "ci-slurm", config={"slurm_patience_minutes": 0.75}, **{"slurm-status-attempts": 2}
    )
    output = campaign / "snakemake.out"
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(profile)]
    outage = None
    with open(output, "w") as out:
        run = subprocess.Popen(command, cwd=campaign, stdout=out, stderr=subprocess.STDOUT)
    try:
        # a short outage while the first segments run (launched: a controller that dies while
        # it launches a job requeues it on hold) and one waits for a core
        wait_for_text(output, "rule_simulate", timeout=180)
        wait_until_running(2, timeout=120)
        stop_controller()
        time.sleep(40)  # a status query waits out slurmctld's message timeout: 20 s can pass unseen
        start_controller()
        mark = wait_for_text(output, "Slurm does not say what became of job(s)", timeout=120)
        wait_for_text(output, "again; following it", timeout=180, after=mark)
        # the second segments run: now a long outage
        wait_for_text(output, "segment=0001", timeout=240)
        wait_until_running(1, timeout=120)
        stop_controller()
        outage = time.time()
        code = run.wait(timeout=300)
        stopped_after = time.time() - outage
    finally:
        if run.poll() is None:
            run.kill()
        if not controller_running():
            start_controller()
        subprocess.run(
            ["scontrol", "update", "nodename=" + os.uname().nodename.split(".")[0], "state=resume"], capture_output=True
        )
    text = output.read_text()
    assert code != 0 and stopped_after < 120, f"the first run did not stop by itself:\n{text[-3000:]}"
    (line,) = {line.strip() for line in text.splitlines() if line.strip().startswith("mdcampaign: Slurm has not said")}
    assert "simulate system=ala" in line and "running the same command again is safe" in line, line
    assert "Traceback" not in text
    # nothing was cancelled: Slurm's own record of every job
    for job_ids in jobs_of_segments(campaign).values():
        for job_id in job_ids:
            assert slurm_record_when_ended(job_id)["JobState"] != "CANCELLED", job_id
    rerun = run_with_profile(campaign, profile, timeout=600)
    assert "Traceback" not in rerun.stdout + rerun.stderr
    assert_complete(campaign, {f"ala/r{k}": 0.12 for k in (1, 2, 3)})
    # no segment ever ran in two Slurm jobs at the same time
    for segment, job_ids in jobs_of_segments(campaign).items():
        spans = sorted(
            (
                datetime.fromisoformat(slurm_record_when_ended(j)["StartTime"]),
                datetime.fromisoformat(slurm_record_when_ended(j)["EndTime"]),
            )
            for j in job_ids
        )
        for (_, first_end), (second_start, _) in itertools.pairwise(spans):
            assert second_start >= first_end, f"{segment} ran in two jobs at once: {job_ids}"
    report("controller outage", "followed, then stopped in one line; rerun exact", True)


def slurm_record_when_ended(job_id: str, timeout: float = 60) -> dict[str, str]:
    """Slurm's job-completion record of a job, once it has ended."""
    deadline = time.time() + timeout
    while True:
        try:
            return slurm_record(job_id)
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_a_submission_refused_by_slurm_names_the_partition_in_one_line(tmp_path):
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
    )
    profile = make_profile(tmp_path, "ci-slurm", **{"retries": 0})
    subprocess.run(["scontrol", "update", "PartitionName=normal", "State=INACTIVE"], check=True)
    try:
        result = run_with_profile(campaign, profile, check=False, timeout=300)
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=normal", "State=UP"], check=True)
    text = result.stdout + result.stderr
    lines = [line.strip() for line in text.splitlines() if "mdcampaign: Slurm refused the setup job" in line]
    assert result.returncode != 0 and lines, text[-3000:]
    assert "for partition 'normal'" in lines[0] and "sinfo -p normal" in lines[0], lines[0]
    assert "Traceback" not in text
