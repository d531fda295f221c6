"""How long a `simulate` job should ask for: from the segment length and the speed
expected on this machine (measured on earlier segments of the same system when there
are any, otherwise the profile's estimate), with room to spare."""

from __future__ import annotations

import math
from pathlib import Path

from . import layout
from .errors import DataError
from .records import read_manifest

# Ask for this much more than the expected time (speed varies between nodes and runs).
SAFETY_FACTOR = 1.5
# Job start-up: Snakemake inside the job, imports, context creation.
STARTUP_MINUTES = 5


def measured_ns_per_day(
    system: str, replica: int, segment: int, replicas: int, base_dir: Path | str = "."
) -> float | None:
    """Speed of the closest finished segment of the same system, or None.

    Looks at this simulation's previous segment, then at segment 0 of the other
    replicas: a few `stat`s and at most one small JSON read per job.
    """
    candidates = []
    if segment > 0:
        candidates.append((replica, segment - 1))
    candidates += [(other, 0) for other in range(1, replicas + 1) if other != replica]
    for other, index in candidates:
        record = Path(base_dir) / layout.fill(
            layout.SEGMENT_RECORD, system=system, replica=other, segment=layout.segment_name(index)
        )
        try:
            manifest = read_manifest(record, missing_ok=True)
        except DataError:
            continue
        speed = manifest.info.ns_per_day if manifest else None
        if speed:
            return float(speed)
    return None


def expected_speed(campaign, simulation, segment: int, base_dir: Path | str = ".", known: float | None = None) -> float:
    """The ns/day a simulation's segment is expected to run at on this machine: ``known``
    (a speed the caller has at hand), else that of the closest finished segment of the same
    system (measured_ns_per_day), else the profile's estimate for its solvent. What time
    limits and ETAs are made of."""
    speed = known or measured_ns_per_day(
        simulation.system, simulation.replica, segment, campaign.systems[simulation.system].replicas, base_dir
    )
    return speed or campaign.expected_ns_per_day[simulation.protocol.solvent]


def segment_runtime_minutes(
    segment_ns: float, ns_per_day: float, attempt: int = 1, max_minutes: int | None = None
) -> int:
    """Minutes to request for one segment. Each retry asks for proportionally more;
    never more than the partition allows (the runner stops cleanly before the limit
    and a later job continues the segment)."""
    return runtime_minutes(segment_ns / ns_per_day, attempt, max_minutes)


def runtime_minutes(days: float, attempt: int = 1, max_minutes: int | None = None) -> int:
    """Minutes to request for ``days`` of expected work (a segment, or a packed job's
    share of its batch), with room to spare and the job's start-up."""
    minutes = math.ceil(SAFETY_FACTOR * days * 24 * 60 * attempt) + STARTUP_MINUTES
    return min(minutes, max_minutes) if max_minutes else minutes
