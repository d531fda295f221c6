"""The stale-lock check (runlock.claim) with real processes: a live run holding the
campaign, one killed with SIGKILL, one on another host. Each case runs in a few
hundred milliseconds; the whole workflow is tested in test_faults.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdcampaign import layout, runlock

CLAIM = "from mdcampaign import runlock; runlock.claim()"
HOLD = CLAIM + "; print('ready', flush=True); import time; time.sleep(120)"


def claim_in(directory: Path) -> str:
    """What a new run of the campaign in `directory` says (its stderr)."""
    result = subprocess.run([sys.executable, "-c", CLAIM], cwd=directory, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def holder(tmp_path):
    """Start a process that claims the campaign in tmp_path and stays alive."""
    started = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def snakemake_locks(directory: Path) -> list[Path]:
    """Lock files as Snakemake writes them once it has built its DAG."""
    locks = directory / layout.SNAKEMAKE_LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    files = [locks / "0.input.lock", locks / "0.output.lock"]
    files[0].write_text(f"{directory}/config/systems.tsv\n")
    files[1].write_text(f"{directory}/results/summary.tsv\n")
    return files


def records(directory: Path) -> list[dict]:
    locks = directory / layout.SNAKEMAKE_LOCKS
    return [json.loads(p.read_text()) for p in locks.glob(runlock.RECORD_PREFIX + "*.json")]


def test_a_live_run_is_named_and_its_lock_kept(tmp_path, holder):
    first = holder()
    locks = snakemake_locks(tmp_path)
    said = claim_in(tmp_path)
    assert said.count("\n") == 1 and said.startswith("mdcampaign: ")
    assert f"being run by pid {first.pid} on host {socket.gethostname()} since " in said
    assert all(lock.exists() for lock in locks)
    assert first.poll() is None


def test_the_lock_of_a_killed_run_is_cleared(tmp_path, holder):
    first = holder()
    locks = snakemake_locks(tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait()
    said = claim_in(tmp_path)
    assert said.count("\n") == 1 and said.startswith("mdcampaign: cleared the lock")
    assert f"pid {first.pid} on host {socket.gethostname()}" in said
    assert not any(lock.exists() for lock in locks)
    assert records(tmp_path) == [], "the dead run's record went with its lock; the checking run's at its exit"
    assert claim_in(tmp_path) == ""


def test_a_lock_from_another_host_is_kept_and_unlock_is_suggested(tmp_path):
    locks = snakemake_locks(tmp_path)
    started = time.time() - 3600
    record = {"pid": os.getpid(), "host": "elsewhere.example", "started": started}
    (tmp_path / layout.SNAKEMAKE_LOCKS / f"{runlock.RECORD_PREFIX}elsewhere.example.{os.getpid()}.json").write_text(
        json.dumps(record)
    )
    (tmp_path / layout.RUN_LOCK).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout.RUN_LOCK).touch()  # nobody holds it here: flocks may not reach that host
    said = claim_in(tmp_path)
    assert said.count("\n") == 1 and said.startswith("mdcampaign: ")
    assert f"pid {os.getpid()} on host elsewhere.example" in said and "--unlock" in said
    assert "cleared" not in said
    assert all(lock.exists() for lock in locks)
    assert [r["host"] for r in records(tmp_path)] == ["elsewhere.example"]


def test_a_stale_lock_is_not_cleared_while_another_run_lives(tmp_path, holder):
    """A run killed while a dry-run started after it in another terminal still goes on:
    the lock is provably stale only once no run of the campaign lives any more."""
    crashed = holder()
    locks = snakemake_locks(tmp_path)
    long_ago = time.time() - 4 * runlock.CLOCK_SLACK_S
    for lock in locks:
        os.utime(lock, (long_ago + 1, long_ago + 1))
    for record_file in (tmp_path / layout.SNAKEMAKE_LOCKS).glob(runlock.RECORD_PREFIX + "*.json"):
        os.utime(record_file, (long_ago, long_ago))  # a run's start is its record's time on the file system
    dry_run = holder()
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    said = claim_in(tmp_path)
    assert said.count("\n") == 1 and f"left by a run that no longer exists (pid {crashed.pid} " in said
    assert all(lock.exists() for lock in locks)
    dry_run.kill()
    dry_run.wait()
    assert f"cleared the lock left by a run that no longer exists (pid {crashed.pid} " in claim_in(tmp_path)


def test_a_reboot_or_a_reused_pid_is_a_run_that_no_longer_exists(tmp_path):
    locks_dir = tmp_path / layout.SNAKEMAKE_LOCKS
    host = socket.gethostname()
    # pid 1 exists, but it is not the process that wrote either record
    for name, extra in (("reboot", {"boot_id": "a-boot-before-this-one"}), ("reused", {"proc_start": "-1"})):
        locks = snakemake_locks(tmp_path)
        record = {"pid": 1, "host": host, "started": time.time() - 60, **extra}
        (locks_dir / f"{runlock.RECORD_PREFIX}{name}.1.json").write_text(json.dumps(record))
        said = claim_in(tmp_path)
        assert said.startswith("mdcampaign: cleared the lock") and f"(pid 1 on host {host}, " in said, name
        assert not any(lock.exists() for lock in locks)


def test_a_lock_nobody_recorded_is_left_to_snakemake(tmp_path):
    locks = snakemake_locks(tmp_path)
    assert claim_in(tmp_path) == ""
    assert all(lock.exists() for lock in locks)


def test_a_run_that_ends_leaves_no_record(tmp_path):
    assert claim_in(tmp_path) == ""
    assert records(tmp_path) == []
    assert list((tmp_path / layout.SNAKEMAKE_LOCKS).iterdir()) == []
