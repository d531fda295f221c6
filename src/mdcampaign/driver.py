"""A site's *driver*: the Snakemake that runs its part of the campaign, started by
`mdcampaign sites start`, detached on the site's login node (its own session, so it
outlives the SSH connection that started it), its output in ``logs/driver.log`` of
the campaign folder there. `sites stop` lets the jobs that run finish their segments
and release their claims (``--now``: cancels them, and they checkpoint and release as
at a time limit); `sites logs` shows the end of the log.

For a site with a ``host`` each of these is `mdcampaign sites here ...` run there over
SSH (sitehost.SiteMachine), which calls the functions below on that machine; a site
without one is this machine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import layout, shipped
from .errors import CampaignError
from .sites import Site

LOG_TAIL_LINES = 40
# What the driver's stop waits for before it says the driver still runs.
STOP_WAIT_SECONDS = 5.0


def running_driver(directory: Path) -> int | None:
    """The pid of the site's driver, if one runs: its pid file names a live Snakemake."""
    try:
        pid = int((Path(directory) / layout.DRIVER_PID).read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"snakemake" in command else None


def profile_path(profile: str | None, directory: Path) -> str | None:
    """The site's profile as `snakemake --profile` takes it: a folder of the campaign
    (profiles/NAME, where deploy puts it), else a path, else a name Snakemake finds."""
    if not profile:
        return None
    from .doctor import find_profile

    found = find_profile(profile, Path(directory))
    if found is None:
        raise CampaignError(f"profile '{profile}' not found in {Path(directory) / 'profiles'} or as a path")
    return str(found.parent.resolve())


def start_here(directory: Path, site: str, profile: str | None) -> str:
    """Start the site's driver, detached; one line saying what happened."""
    directory = Path(directory).resolve()
    pid = running_driver(directory)
    if pid is not None:
        return f"site {site}: its driver already runs (pid {pid} on {os.uname().nodename}); nothing started"
    profile = profile_path(profile, directory)
    (directory / layout.DRAIN_MARKER).unlink(missing_ok=True)
    for path in (layout.DRIVER_LOG, layout.DRIVER_PID):
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
    # the Snakemake of this environment (the site's virtual environment)
    snakemake = shutil.which("snakemake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if snakemake is None:
        raise CampaignError(f"site {site}: no snakemake in this environment ({Path(sys.executable).parent})")
    command = [snakemake, *(["--profile", profile] if profile else []), "--config", f"site={site}"]
    if not any((directory / name).is_file() for name in ("Snakefile", "workflow/Snakefile")):
        command += ["--snakefile", str(shipped.WORKFLOW / "Snakefile")]  # a folder not made by init
    with open(directory / layout.DRIVER_LOG, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S %z')}: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: it outlives the SSH connection
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        )
    (directory / layout.DRIVER_PID).write_text(f"{process.pid}\n")
    return f"site {site}: driver started (pid {process.pid} on {os.uname().nodename}; log {layout.DRIVER_LOG})"


def stop_here(directory: Path, site: str, now: bool = False) -> str:
    """Stop the site's driver: its running jobs finish their segments and take no more
    work (the drain marker), Snakemake waits for them and ends (SIGTERM); ``now``:
    its Slurm jobs are cancelled and its local jobs signalled, and they checkpoint."""
    from . import slurm

    directory = Path(directory).resolve()
    marker = directory / layout.DRAIN_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"mdcampaign sites stop{' --now' if now else ''} at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
    cancelled = []
    if now:
        cancelled = [job["job_id"] for job in slurm.jobs_from(str(directory)) or []]
        if cancelled:
            slurm.cancel(cancelled)
    pid = running_driver(directory)
    jobs = f"; Slurm jobs {', '.join(cancelled)} cancelled" if cancelled else ""
    if pid is None:
        return f"site {site}: no driver runs{jobs}"
    try:
        if now:  # its local jobs too (they are in its session): they checkpoint and stop
            os.killpg(pid, signal.SIGTERM)
        else:  # Snakemake alone: it waits for the running jobs, which take no more work
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"site {site}: its driver had just ended{jobs}"
    deadline = time.time() + STOP_WAIT_SECONDS
    while time.time() < deadline and running_driver(directory) is not None:
        time.sleep(0.2)
    if running_driver(directory) is None:
        return f"site {site}: driver (pid {pid}) stopped{jobs}"
    waits = "its jobs checkpoint and stop" if now else "its running jobs finish their segments first"
    return f"site {site}: driver (pid {pid}) stopping: {waits}{jobs}"


def logs_here(directory: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The end of the site's driver log."""
    path = Path(directory) / layout.DRIVER_LOG
    if not path.exists():
        return f"no driver log yet ({layout.DRIVER_LOG}): the site was never started with `mdcampaign sites start`"
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 200_000))
        return "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-lines:])


# -- from the workstation: here or over SSH ---------------------------------------------------


def on_site(site: Site, settings, directory: Path, action: str, *options: str) -> str:
    """`mdcampaign sites here ACTION` for one site: on its machine over SSH, or here."""
    arguments = ["--site", site.name, *options]
    if site.host is None:
        return here(Path(directory), action, site.name, site.profile, options)
    from .sitehost import SiteMachine

    machine = SiteMachine(site, settings)
    if action == "start":
        _check_build(machine)
        arguments += ["--profile", f"profiles/{site.profile_name}"] if site.profile_name else []
    result = machine.mdcampaign("sites", "here", action, *arguments)
    return result.stdout.rstrip()


def here(directory: Path, action: str, site: str, profile: str | None, options) -> str:
    """`mdcampaign sites here ACTION`: on the site's own machine, in its campaign folder."""
    if action == "start":
        return start_here(directory, site, profile)
    if action == "stop":
        return stop_here(directory, site, now="--now" in options)
    return logs_here(directory)


def _check_build(machine) -> None:
    """A site runs exactly this build: refuse to start one that holds another."""
    from .deploy import this_build

    there = machine.probe().get("build")
    here = this_build()
    if there != here:
        held = f"mdcampaign build {there}" if there else "no mdcampaign installed by deploy"
        raise CampaignError(
            f"{machine.name} has {held}, this is build {here}: run `mdcampaign sites deploy "
            f"{machine.site.name}` to bring it to this build, then start it"
        )


# -- inside the driver (workflow/rules/common.smk) ---------------------------------------------


def run_started(campaign, config: dict, config_file: str, say=print):
    """A site's run starts (not a dry-run): refuse another campaign definition than the
    store's, then beat every poll (heartbeat.py). The heartbeat, or None for a run
    that is not a site's."""
    from .definition import check_definition
    from .errors import TransferError
    from .heartbeat import driver_started
    from .store import TransferSettings, open_store

    if not campaign.sites or campaign.site is None:
        return None
    store = open_store(campaign.store, TransferSettings.of(**config.get("transfer", {})))
    try:
        check_definition(campaign, store, config_file)
    except TransferError as error:  # the store may come back; the jobs check their claims there anyway
        say(f"mdcampaign: warning: could not compare the campaign's definition with the store's ({error})")
    heartbeat = driver_started(campaign, store)
    # Snakemake may exit without its onsuccess/onerror (interrupted while it updates a
    # checkpoint's jobs): the last beat is said anyway (the first end said stands)
    atexit.register(run_ended, heartbeat, "failed")
    return heartbeat


def run_ended(heartbeat, state: str) -> None:
    """The run ends (``finished`` or ``failed``, or ``stopped`` by `sites stop`): its
    last beat says so."""
    if heartbeat is not None:
        heartbeat.finish("stopped" if os.path.exists(layout.DRAIN_MARKER) else state)
