"""What a run refuses before it starts: protocol changes of simulations that have
started, a major upgrade of mdcampaign under a started campaign, a simulation moved
from the site it started on (fixed assignment), and a profile whose Slurm allocation
was never filled in."""

from __future__ import annotations

from pathlib import Path

from . import __version__, layout
from .campaign import Campaign
from .errors import CampaignError, DataError
from .protocol import ADDED_KEYS, UNTIL_PREFIX
from .records import read_manifest
from .sites import ASSIGNMENT_FILE

ACCOUNT_PLACEHOLDER = "FILL-IN-YOUR-ALLOCATION"


def account_problem(config: dict) -> str | None:
    """A message if a cluster profile's Slurm account is still the placeholder."""
    if str(config.get("slurm_account", "")).startswith(ACCOUNT_PLACEHOLDER):
        return (
            f"the profile's Slurm account is still the placeholder '{ACCOUNT_PLACEHOLDER}': put your "
            "allocation (e.g. TG-MCB123456; `sacctmgr show assoc user=$USER` or TACC's `/usr/local/etc/taccinfo` "
            "lists yours) on the `slurm_account: &account` line of the profile's config.yaml"
        )
    return None


# Keys that may change after a simulation started: extending it is the point of
# target_ns, and checkpoint frequency does not change the trajectory.
MUTABLE_KEYS = ("target_ns", "checkpoint_interval_ps")


# Segment records written before they named the version were written by this one.
FIRST_VERSION = "0.1.0"


def series(version: str) -> str:
    """The part of a version that a compatible release keeps (semantic versioning: the
    major number, or major.minor before 1.0)."""
    parts = version.split(".")
    return ".".join(parts[:2]) if parts[0] == "0" else parts[0]


def same_series(a: str, b: str) -> bool:
    return series(a) == series(b)


def check_started(campaign: Campaign, base_dir: Path | str = ".") -> None:
    """Refuse protocol changes for simulations that already have segments, and a major
    upgrade of mdcampaign for a campaign started with an earlier version.

    A simulation continues from the system and state it started with; changing, say,
    its temperature or timestep half-way would silently mix two protocols in one
    trajectory. Reads the manifest of segment 0 of every started simulation.
    """
    for simulation in campaign.simulations:
        record = Path(base_dir) / layout.fill(
            layout.SEGMENT_RECORD, **simulation.wildcards, segment=layout.segment_name(0)
        )
        try:
            manifest = read_manifest(record, missing_ok=True)
        except DataError as error:
            raise CampaignError(str(error)) from None
        if manifest is None:
            continue
        started_with = manifest.mdcampaign_version or FIRST_VERSION
        if not same_series(started_with, __version__):
            raise CampaignError(
                f"{simulation.name} was started with mdcampaign {started_with} ({record}) and this is mdcampaign "
                f"{__version__}, a major change: finish this campaign with mdcampaign {series(started_with)}.x "
                f"(pip install 'mdcampaign=={series(started_with)}.*'), or start a new campaign folder "
                "(mdcampaign init) for this version"
            )
        # Records leave out keys at their as-before value (Protocol.record).
        recorded = {**ADDED_KEYS, **manifest.protocol} if manifest.protocol else {}
        started_at = manifest.site
        if campaign.sites and not campaign.pulls and started_at and simulation.site != started_at:
            raise CampaignError(
                f"{simulation.name} was started on site '{started_at}' ({record}) but is now assigned to site "
                f"'{simulation.site}'; a started simulation stays where it is: put it back with the systems "
                f"table's site column or {ASSIGNMENT_FILE} (`mdcampaign plan --write` keeps started ones in place)"
            )
        current = simulation.protocol.__dict__
        for key, value in recorded.items():
            if key in MUTABLE_KEYS or key.startswith(UNTIL_PREFIX) or key not in current or current[key] == value:
                continue
            system = campaign.systems[simulation.system]
            raise CampaignError(
                f"{campaign.systems_file}, line {system.line} (id '{system.id}'): {key} is {current[key]!r} "
                f"but {simulation.name} was started with {value!r}; only {' and '.join(MUTABLE_KEYS)} may "
                "change once a simulation has started. Use a new system id for the new protocol, or move "
                f"{layout.RESULTS}/sims/{system.id} away to start these simulations over"
            )
