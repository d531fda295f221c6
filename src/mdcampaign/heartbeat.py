"""Each site's driver (the Snakemake that `mdcampaign sites start` runs, or a user's
own) says it is alive: every poll it rewrites ``sites/<site>.json`` in the store with
its host, pid, jobs running and waiting, and the last error line of its log. A file's
age is read with the store's clock (its time on the store's file system, against a
file created there just before), so `mdcampaign status` shows, from any machine, which
drivers are alive and which went silent (a login node rebooted, a driver killed), with
the one command that restarts a silent one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import layout, slurm
from .errors import TransferError
from .runs import clock, iso_time
from .store import Store

log = logging.getLogger(__name__)

# A driver is silent once it missed this many beats (plus a little for the store's latency).
MISSED_BEATS = 3
SLACK_SECONDS = 10.0
# Slurm states of a job that runs (else it waits).
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING")


@dataclass
class Beat:
    """What the store says of one site's driver."""

    site: str
    age: float  # seconds since it last beat, by the store's clock
    record: dict

    @property
    def silent(self) -> bool:
        """Not running: it ended, or it missed its beats (killed, its machine rebooted)."""
        interval = float(self.record.get("interval_s") or 60)
        return self.record.get("state") != "running" or self.age > MISSED_BEATS * interval + SLACK_SECONDS


def beat(store: Store, site: str, record: dict) -> None:
    """Rewrite the site's heartbeat file (created in the store, so stamped by its clock)."""
    name = f"{layout.STORE_SITES}/{site}.json"
    store.run_script(
        f"mkdir -p {layout.STORE_SITES} && t=$(mktemp {layout.STORE_SITES}/.beat.XXXXXX) && "
        f'chmod 644 "$t" && printf "%s\\n" {shlex.quote(json.dumps(record, sort_keys=True))} > "$t" && '
        f'mv -f "$t" {shlex.quote(name)}',
        f"writing the heartbeat of site {site}",
    )


def read_beats(store: Store) -> dict[str, Beat]:
    """Every site's last heartbeat and its age: one call to the store."""
    out = store.run_script(
        f"mkdir -p {layout.STORE_SITES} && c=$(mktemp {layout.STORE_SITES}/.clock.XXXXXX) && "
        'stat -c %Y "$c" && rm -f "$c" && '
        f'for f in {layout.STORE_SITES}/*.json; do [ -f "$f" ] || continue; '
        'printf "%s\\t%s\\t" "$f" "$(stat -c %Y "$f")"; head -c 100000 "$f"; echo; done',
        "reading the sites' heartbeats",
    )
    lines = out.splitlines()
    now = float(lines[0])
    beats = {}
    for line in lines[1:]:
        path, _, rest = line.partition("\t")
        stamp, _, text = rest.partition("\t")
        try:
            record = json.loads(text)
            site = Path(path).stem
            beats[site] = Beat(site, max(0.0, now - float(stamp)), record)
        except ValueError:
            continue  # being rewritten, or not ours
    return beats


def driver_record(site: str, directory: Path, started: float, interval: float, state: str = "running") -> dict:
    """What a driver says of itself: where it runs, its jobs, its last error line."""
    jobs = slurm.jobs_from(str(directory))
    if jobs is not None and jobs:
        running = sum(1 for job in jobs if job["state"] in RUNNING_STATES)
        counts = {"running": running, "waiting": len(jobs) - running, "by": "slurm"}
    else:
        counts = {"running": _local_jobs(), "waiting": 0, "by": "processes"}
    return {
        "site": site,
        "state": state,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "directory": str(Path(directory).resolve()),
        "started_at": iso_time(started),
        "beat_at": iso_time(time.time()),
        "interval_s": interval,
        **clock(directory),
        "jobs": counts,
        "last_error": last_error_line(Path(directory)),
    }


def _local_jobs() -> int:
    """This driver's running jobs, when it runs them itself: its job processes."""
    count = 0
    me = str(os.getpid())
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"job.py" in command and re.search(rf"^PPid:\s*{me}$", status, re.M):
            count += 1
    return count


ERROR_LINE = re.compile(r"(Error in rule \S+|mdcampaign: .*|FAILED: .*|WorkflowError.*)")


def last_error_line(directory: Path) -> str | None:
    """The last line that says something failed, in the newest Snakemake log here."""
    logs = sorted((directory / ".snakemake" / "log").glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    with open(logs[-1], "rb") as handle:
        handle.seek(max(0, logs[-1].stat().st_size - 65536))
        text = handle.read().decode("utf-8", "replace")
    found = ERROR_LINE.findall(text)
    return found[-1][:300] if found else None


# How long the final beat waits for a "running" beat under way (a slow store).
FINAL_BEAT_WAIT_SECONDS = 60.0


class Heartbeat(threading.Thread):
    """Beats for a running driver until stopped (a daemon thread of its Snakemake)."""

    def __init__(self, store: Store, site: str, interval: float, directory: Path | str = "."):
        super().__init__(name="mdcampaign-heartbeat", daemon=True)
        self.store, self.site, self.interval = store, site, interval
        self.directory = Path(directory)
        self.started = time.time()
        self._halt = threading.Event()
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self._beat("running")
            self._halt.wait(self.interval)

    def _beat(self, state: str) -> None:
        try:
            record = driver_record(self.site, self.directory, self.started, self.interval, state)
            beat(self.store, self.site, record)
        except (TransferError, OSError) as error:  # the store may come back; the driver goes on
            log.warning("site %s: heartbeat not written (%s)", self.site, error)

    def finish(self, state: str) -> None:
        """The driver ends: say so (``finished``, ``failed``), and beat no more. Once:
        the first end said stands. The last "running" beat is waited for, so that it can
        never land after this one."""
        if self._finished.is_set():
            return
        self._finished.set()
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=FINAL_BEAT_WAIT_SECONDS)
        self._beat(state)


def driver_started(campaign, store: Store, directory: Path | str = ".") -> Heartbeat:
    """A site's run starts: it beats every poll until ``finish``."""
    heartbeat = Heartbeat(store, campaign.site, max(1.0, campaign.pulling.poll_seconds), directory)
    heartbeat.start()
    return heartbeat


@dataclass
class SiteState:
    """One site's driver, as `mdcampaign status` shows it."""

    site: str
    state: str  # alive, silent, finished, failed, stopped (sites stop), never (no heartbeat yet)
    age_s: float | None  # since its last beat, by the store's clock
    host: str | None
    pid: int | None
    jobs: dict
    last_error: str | None
    restart: str | None  # the command that starts it again (not for an alive or finished one)

    @property
    def needs_start(self) -> bool:
        """What `sites start --all` starts: a driver that should run and does not (not
        one that finished, nor one stopped on purpose)."""
        return self.state in ("silent", "failed", "never")


def site_states(campaign, beats: dict[str, Beat]) -> list[SiteState]:
    """Every configured site's driver: alive, silent (killed, rebooted), finished or
    failed, and how to start it again."""
    states = []
    for name in campaign.sites:
        found = beats.get(name)
        if found is None:
            state = "never"
        elif found.record.get("state") == "running":
            state = "silent" if found.silent else "alive"
        else:
            state = str(found.record.get("state"))
        record = found.record if found else {}
        states.append(
            SiteState(
                site=name,
                state=state,
                age_s=round(found.age, 1) if found else None,
                host=record.get("host"),
                pid=record.get("pid"),
                jobs=record.get("jobs") or {},
                last_error=record.get("last_error"),
                restart=None if state in ("alive", "finished") else f"mdcampaign sites start {name}",
            )
        )
    return states
