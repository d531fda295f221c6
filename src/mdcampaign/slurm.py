"""What the workflow asks Slurm itself (the Slurm executor plugin submits the jobs):
the user's queued and running jobs, and when a running job must end. Read-only, one
call each; an absent or unanswering Slurm gives empty answers, never an error."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime


def queued_jobs() -> dict[str, dict]:
    """This user's queued and running jobs by the plugin's job comment
    (rule_<rule>_wildcards_<values>): id, state, elapsed and limit. One squeue call."""
    if not shutil.which("squeue"):
        return {}
    try:
        result = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%i|%T|%k|%M|%l"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    jobs = {}
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            jobs[parts[2]] = {"job_id": parts[0], "state": parts[1], "elapsed": parts[3], "limit": parts[4]}
    return jobs


def jobs_from(directory: str) -> list[dict] | None:
    """This user's jobs that the Slurm executor plugin submitted from ``directory``
    (its comment rule_<rule>_wildcards_<values>): id, state, comment; None when
    Slurm does not answer."""
    try:
        result = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%i|%T|%k|%Z"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    jobs = []
    for line in result.stdout.splitlines():
        parts = line.split("|", 3)
        if (
            len(parts) == 4
            and parts[2].startswith("rule_")
            and os.path.realpath(parts[3]) == os.path.realpath(directory)
        ):
            jobs.append({"job_id": parts[0], "state": parts[1], "comment": parts[2]})
    return jobs


def pending_reasons(job_ids: list[str]) -> dict[str, str]:
    """Why each of these pending jobs waits (squeue's reason, e.g. Resources, Priority,
    launch_failed_requeued_held). One squeue call; {} when Slurm does not answer."""
    if not job_ids:
        return {}
    try:
        result = subprocess.run(
            ["squeue", "-h", "-t", "PD", "-j", ",".join(job_ids), "-o", "%i|%r"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split("|", 1) for line in result.stdout.splitlines() if "|" in line)


def cancel(job_ids: list[str]) -> bool:
    """scancel these jobs; whether Slurm accepted it."""
    try:
        return subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def job_end_time(job_id: str) -> float | None:
    """When a running job reaches its time limit (epoch seconds), or None if unknown."""
    try:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=30)
        return datetime.strptime(result.stdout.strip(), "%Y-%m-%dT%H:%M:%S").timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def partitions() -> tuple[set[str] | None, str]:
    """The cluster's partitions (None if the controller cannot be reached) and what
    sinfo said when it could not."""
    result = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None, result.stderr.strip()[:200]
    return {line.strip().rstrip("*") for line in result.stdout.splitlines() if line.strip()}, ""


def accounts(user: str) -> set[str] | None:
    """The Slurm accounts ``user`` may charge (None where sacctmgr cannot say)."""
    if not shutil.which("sacctmgr"):
        return None
    result = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", "format=account", f"user={user}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def config_answers_within(seconds: float) -> bool:
    """Whether `scontrol show config` (what the Slurm executor plugin asks at every
    Snakemake start) answers, or is refused, within ``seconds``."""
    import time

    started = time.monotonic()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=seconds + 1)
    except subprocess.TimeoutExpired:
        pass
    return time.monotonic() - started < seconds
