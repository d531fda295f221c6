"""Clearing the lock that a killed Snakemake leaves behind, and naming a live run.

Snakemake locks a working directory with plain files (``.snakemake/locks/<n>.input.lock``
and ``<n>.output.lock``) that it deletes when it ends. After ``kill -9``, an OOM kill or
a reboot of the login node they stay, and every later run fails with ``Directory cannot
be locked`` until someone runs ``--unlock``. :func:`claim`, called while the Snakefile is
parsed by the main Snakemake process (before Snakemake checks its locks), removes them
when the run that took them provably no longer exists, and otherwise says which run
holds them.

Two things make "provably":

- every main Snakemake process of the campaign holds a shared ``flock`` on
  :data:`layout.RUN_LOCK` for as long as it lives (the kernel drops it when the process
  dies, however it dies). A process that can take it exclusively knows that no other
  one is alive, as far as this host's locks reach.
- every such process leaves a record (pid, host, start) next to Snakemake's lock files,
  removed when it exits, and by Snakemake itself with its locks (``--unlock``, the end of
  a run). Some cluster file systems do not share ``flock`` between nodes, so a record
  from another host is never taken as dead: that case keeps Snakemake's ``--unlock``.

A process on this host counts as gone when its pid no longer exists, is a zombie, or
now belongs to another process (another start time, or another boot).

Nothing here may stop a run with a traceback: anything unexpected is one warning line.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import time

from . import layout

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None

PREFIX = "mdcampaign: "
# Per process, next to Snakemake's own lock files (which Snakemake reads only as
# <n>.input.lock / <n>.output.lock, so it ignores these).
RECORD_PREFIX = "mdcampaign-run."
_RECORD = re.compile(re.escape(RECORD_PREFIX) + r".*\.json$")
_SNAKEMAKE_LOCK = re.compile(r"^[0-9]+\.(input|output)\.lock$")
# flock is not available on this file system
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
# How long to wait for the shared lock while another process checks (holds it alone).
SHARED_WAIT_S = 10.0
# Slack between this host's clock and the file system's when telling which run made
# the lock files (that run started before it made them).
CLOCK_SLACK_S = 60.0

# The claims of this process, held open for its whole life (one per campaign directory).
_held: dict[str, _Claim] = {}


class _Claim:
    def __init__(self, fd: int | None, record_path: str):
        self.fd = fd
        self.record_path = record_path


def this_host() -> str:
    return socket.gethostname() or "unknown"


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _record_name(host: str, pid: int) -> str:
    return f"{RECORD_PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}.{pid}.json"


def _my_record() -> dict:
    stat = _proc_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "host": this_host(),
        "started": time.time(),
        "boot_id": _boot_id(),
        "proc_start": stat[1] if stat else None,
    }


def alive_here(record: dict) -> bool:
    """Whether the process of a record from this host still exists (the same process,
    not a later one that got its pid)."""
    pid = record["pid"]
    if pid == os.getpid():
        return False  # our own record is written after this check: an earlier process's
    boot_id = _boot_id()
    if record.get("boot_id") and boot_id and record["boot_id"] != boot_id:
        return False  # the host rebooted since
    if not process_exists(pid):
        return False
    stat = _proc_stat(pid)
    return stat is None or not record.get("proc_start") or record["proc_start"] == stat[1]


def process_exists(pid: int) -> bool:
    """Whether a live process with this pid exists on this host (anyone's; a zombie is
    not live). Without /proc, the pid alone is trusted."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, but it exists
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


def _when(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


def _describe(record: dict) -> str:
    return f"pid {record['pid']} on host {record['host']}"


def _say(line: str) -> None:
    print(PREFIX + line, file=sys.stderr, flush=True)


def _read_records(locks_dir: str) -> list[dict]:
    records = []
    try:
        names = os.listdir(locks_dir)
    except FileNotFoundError:
        return []
    for name in names:
        if not _RECORD.match(name):
            continue
        path = os.path.join(locks_dir, name)
        try:
            with open(path) as file:
                record = json.load(file)
            record["pid"] = int(record["pid"])
            record["host"] = str(record["host"])
            # when it started, on the file system's clock (the record is written once, at
            # the start), to compare with the lock files' times: a host whose own clock
            # is off (or runs under faketime) would otherwise misjudge which run made them
            record["started"] = os.stat(path).st_mtime
        except FileNotFoundError:
            continue  # it just ended
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: tells nothing
        record["path"] = path
        records.append(record)
    return records


def snakemake_lock_files(locks_dir: str) -> list[str]:
    try:
        return sorted(os.path.join(locks_dir, name) for name in os.listdir(locks_dir) if _SNAKEMAKE_LOCK.match(name))
    except FileNotFoundError:
        return []


def _newest_mtime(paths: list[str]) -> float | None:
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def _likely_owner(records: list[dict], lock_mtime: float | None, strict: bool = False) -> dict | None:
    """Of some records, the run that most likely made the lock files: the last one
    that started before they were written (with ``strict``, only such a one)."""
    before = [r for r in records if lock_mtime is None or r["started"] <= lock_mtime + CLOCK_SLACK_S]
    chosen = before or ([] if strict else records)
    return max(chosen, key=lambda r: r["started"]) if chosen else None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _flock(fd: int, operation: int) -> bool | None:
    """True if taken, False if another process holds it, None if the file system has
    no flock."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_FLOCK:
            return None
        raise


def _take_shared(fd: int) -> None:
    """Hold the shared lock (waiting while another process checks with it held alone)."""
    deadline = time.monotonic() + SHARED_WAIT_S
    while _flock(fd, fcntl.LOCK_SH) is False and time.monotonic() < deadline:
        time.sleep(0.05)


def _write_record(path: str, record: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(record, file)
    os.replace(temporary, path)


def claim(root: str = ".", unlocking: bool | None = None) -> None:
    """Check the campaign in ``root`` for a stale Snakemake lock (clearing it when its
    run provably no longer exists, naming the run otherwise), then mark this process
    as a live run of the campaign until it exits. Prints at most one line on stderr;
    never raises."""
    try:
        _claim(os.path.abspath(root), "--unlock" in sys.argv if unlocking is None else unlocking)
    except Exception as error:  # noqa: BLE001 - a check for the user's comfort must never stop a run
        _say(f"could not check Snakemake's lock ({type(error).__name__}: {error}); going on without")


def _claim(root: str, unlocking: bool) -> None:
    if root in _held or os.name != "posix":
        return
    run_lock = os.path.join(root, layout.RUN_LOCK)
    locks_dir = os.path.join(root, layout.SNAKEMAKE_LOCKS)
    try:
        os.makedirs(os.path.dirname(run_lock), exist_ok=True)
        os.makedirs(locks_dir, exist_ok=True)
        fd = os.open(run_lock, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by jobs (PEP 446)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return  # a directory this user cannot write: Snakemake says so itself
        raise
    alone = _flock(fd, fcntl.LOCK_EX) if fcntl else None
    if alone is None:  # no flock here: the records alone decide
        os.close(fd)
        fd = None
    me = _my_record()
    record_path = os.path.join(locks_dir, _record_name(me["host"], me["pid"]))
    try:
        _check(locks_dir, me["host"], alone, unlocking)
        _write_record(record_path, me)
    finally:
        if fd is not None:
            _take_shared(fd)  # from exclusive, or alongside the live runs
    _held[root] = _Claim(fd, record_path)
    if len(_held) == 1:
        import atexit

        atexit.register(_release_all)


def _check(locks_dir: str, host: str, alone: bool | None, unlocking: bool) -> None:
    records = _read_records(locks_dir)
    here = [r for r in records if r["host"] == host]
    elsewhere = [r for r in records if r["host"] != host]
    alive = [r for r in here if alive_here(r)]
    dead = [r for r in here if r not in alive]
    if alone is not False:
        # No other process of this campaign holds the run lock on this host (or there
        # is no flock): the dead records of this host are stale whatever else is found.
        for record in dead:
            _remove(record["path"])
    lock_files = snakemake_lock_files(locks_dir)
    if not lock_files:
        return
    lock_mtime = _newest_mtime(lock_files)
    if alone is False or alive:
        # A live run: Snakemake refuses as usual (a dry-run only warns); say where it runs.
        # Another host's run can hold this host's lock only where flock is shared.
        live = _likely_owner(alive + elsewhere if alone is False else alive, lock_mtime, strict=bool(dead))
        if live is not None:
            _say(
                f"this campaign is being run by {_describe(live)} since {_when(live['started'])}; "
                "let it finish, or stop it there, before running it again"
            )
        elif dead:
            left = _likely_owner(dead, lock_mtime)
            _say(
                f"the lock was left by a run that no longer exists ({_describe(left)}, started "
                f"{_when(left['started'])}), but another Snakemake of this campaign is still running here; "
                "the same command clears it once that one has ended"
            )
        return
    if elsewhere:
        if not unlocking:
            other = _likely_owner(elsewhere, lock_mtime)
            _say(
                f"the lock was taken by {_describe(other)} at {_when(other['started'])}, which cannot be "
                "checked from here; if that run is gone: snakemake --profile <machine> --unlock"
            )
        return
    if not dead:
        return  # no record of who took it (an older version, or not mdcampaign): not provable
    for path in lock_files:
        _remove(path)
    left = _likely_owner(dead, lock_mtime)
    _say(f"cleared the lock left by a run that no longer exists ({_describe(left)}, started {_when(left['started'])})")


def _release_all() -> None:
    for claim_ in list(_held.values()):
        try:
            _remove(claim_.record_path)
        except OSError:
            pass
        if claim_.fd is not None:
            try:
                os.close(claim_.fd)
            except OSError:
                pass
    _held.clear()
