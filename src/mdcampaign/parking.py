"""Parking: a pulled segment that pauses (its job's time is up, or `sites stop --now`)
leaves its progress in the store, so that whichever site takes the simulation next
continues it from there instead of redoing it from the segment's start.

Without it, a paused segment's checkpoint stays in the scratch of the site that ran
it: that site resumes it, any other redoes it (OpenMM's binary checkpoints load only
on the platform that wrote them, and the scratch is out of other sites' reach). With
it, the pausing job stores what its engine says continues the segment elsewhere
(:meth:`Engine.parked`: for OpenMM the frames and rows so far and a portable checkpoint
of the state as XML; for GROMACS its part files and checkpoints) in
``sims/<system>/r<N>/parked/`` with a record (``parked.json``), under its claim's guard,
then marks it in the claims (``parked-<segment>+<step>``); a site that claims the
simulation at that segment copies it into its own work folder, unless its own
checkpoint there is as far, and the runner continues from it: no gap, no duplicate
frame. Storing the segment removes what was parked for it.

Both directions are best effort: a parking that fails, or does not finish before the
job is killed, leaves nothing half-visible (the store's rename into place is atomic),
and a taker that cannot use what is parked starts the segment afresh, as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from . import layout
from .claims import ClaimBoard, Lease
from .engines.base import Engine
from .errors import DataError
from .files import sha256_file
from .runs import iso_time
from .store import Store, swap_into_place

log = logging.getLogger(__name__)


def park(
    store: Store, board: ClaimBoard, lease: Lease, engine: Engine, work_dir: Path, segment: int, site: str
) -> int | None:
    """Store a paused segment's progress for any site to continue; the step it is at, or
    None when the engine has nothing another machine could continue from."""
    parked = engine.parked(Path(work_dir))
    if parked is None:
        return None
    step, files = parked
    record = {
        "simulation": lease.simulation,
        "segment": segment,
        "step": step,
        "engine": engine.name,
        "format": engine.portable_format(),
        "site": site,
        "parked_at": iso_time(time.time()),
        "files": {path.name: sha256_file(path) for path in files},
    }
    with tempfile.TemporaryDirectory(prefix="mdcampaign-park-") as tmp:
        record_file = Path(tmp) / layout.PARKED_RECORD
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        store.put_directory(
            {**{path.name: path for path in files}, layout.PARKED_RECORD: record_file},
            layout.store_parked(lease.simulation),
            guard=board.guard_script(lease),
        )
    if not board.parked(lease, segment, step):
        log.warning("%s: parked, but the claim was taken over since", lease.simulation)
    return step


def unpark(store: Store, simulation: str, segment: int, step: int, engine: Engine, work_dir: Path, cache: Path) -> bool:
    """Continue ``simulation``'s segment from what another job parked at ``step``: its
    files become the segment's work folder here, unless this site's own checkpoint
    there is as far. True if they did. DataError if the parked record does not say
    what the claims said, or was parked by an engine this one cannot continue."""
    work_dir = Path(work_dir)
    own = engine.checkpoint_step(work_dir) if work_dir.exists() else None
    if own is not None and own >= step:
        return False
    relative = layout.store_parked(simulation)
    record_path = store.collect(relative, layout.PARKED_RECORD, Path(cache)) / layout.PARKED_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{store.describe(relative)}: its {layout.PARKED_RECORD} cannot be read ({error})") from None
    if (record.get("simulation"), record.get("segment"), record.get("step")) != (simulation, segment, step):
        raise DataError(
            f"{store.describe(relative)} holds {record.get('simulation')} segment {record.get('segment')} at step "
            f"{record.get('step')}, not segment {segment} at step {step} as its claims say"
        )
    if record.get("format") != engine.portable_format():
        raise DataError(
            f"{store.describe(relative)} was parked by {record.get('format')}; here runs {engine.portable_format()}"
        )
    landing = work_dir.with_name(f".{work_dir.name}.parked")
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    try:
        store.get([(f"{relative}/{name}", landing / name, sha) for name, sha in record["files"].items()])
    except BaseException:
        shutil.rmtree(landing, ignore_errors=True)
        raise
    swap_into_place(landing, work_dir)
    log.info(
        "%s segment %d: continues from step %d, parked in the store by site %s at %s",
        simulation,
        segment,
        step,
        record.get("site"),
        record.get("parked_at"),
    )
    return True
