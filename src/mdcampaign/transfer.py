"""`stage` and `fetch`: a segment's files between the store and scratch.

Works the same for a local store and a remote one (see :mod:`mdcampaign.store`). The
local record of a fetched segment (its manifest, in ``results/``) is written only
after the store holds the verified segment; planning reads only these records, so
it never needs the store's host.
"""

from __future__ import annotations

import logging
import platform as host_platform
import posixpath
import tempfile
import time
from pathlib import Path

from . import __version__, layout
from .files import atomic_write_json, sha256_file
from .records import Manifest, manifest_text, read_manifest, read_segment_record, write_manifest
from .runs import clock, iso_time
from .store import Store

log = logging.getLogger(__name__)


def file_record(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _stored_manifest(store: Store, relative_dir: str, cache: Path) -> Manifest:
    """The manifest of a segment already in the store."""
    return read_manifest(store.collect(relative_dir, layout.MANIFEST, cache) / layout.MANIFEST)


def stage_segment(store: Store, sources: dict[str, tuple[str, str]], staged: dict[str, Path], info: dict) -> dict:
    """Copy what a segment continues from out of the store into its scratch input
    directory, checksum-verified.

    ``sources``: staged name -> (path in the store, sha256). Writes ``stage.json``
    (``staged['stage.json']``) last.
    """
    store.get([(relative, Path(staged[name]), sha) for name, (relative, sha) in sources.items()])
    files = {name: file_record(Path(staged[name])) for name in sources}
    record = {**info, "files": files, "store": store.describe(), "staged_at": iso_time(time.time())}
    record.update(clock(Path(staged[layout.STAGE_RECORD]).parent))
    atomic_write_json(staged[layout.STAGE_RECORD], record)
    log.info("staged %s segment %s: %s", info.get("simulation"), info.get("segment"), ", ".join(files))
    return record


def fetch_segment(
    store: Store,
    segment_files: dict[str, Path],
    pinned_files: dict[str, Path],
    info: dict,
    sim_dir: str,
    relative_dir: str,
    record_path: Path,
    guard: str | None = None,
    stored=None,
) -> Manifest:
    """Send a finished segment to the store, verified, then write its local record.

    ``segment_files``: name -> scratch path of the segment's outputs. ``pinned_files``:
    name -> scratch path of the files kept once per simulation (segment 0 only).
    ``sim_dir``: the simulation's directory relative to the store, ``relative_dir``
    the segment's (layout.STORE_SIM, layout.STORE_SEGMENT). ``info``: the
    simulation's name, protocol, seed and site, and (after segment 0) its pinned files'
    checksums. ``guard``: see Store.put_directory (a pulled simulation's claim check).
    ``stored``: called once the segment is in the store and before its local record
    exists (which is what makes the plan go on: convergence decides in between).
    """
    files = {name: file_record(Path(path)) for name, path in segment_files.items()}
    pinned = {name: sha256_file(path) for name, path in pinned_files.items()}
    manifest = Manifest(
        simulation=info["simulation"],
        segment=int(posixpath.basename(relative_dir)),
        store=store.describe(),
        path=relative_dir,
        files=files,
        pinned=pinned or info.get("pinned", {}),
        protocol=info.get("protocol"),
        seed=info.get("seed"),
        site=info.get("site"),
        info=read_segment_record(segment_files["segment.json"]),
        fetched_at=iso_time(time.time()),
        fetched_by=host_platform.node(),
        **clock(Path(record_path).parent if Path(record_path).parent.exists() else "."),
        mdcampaign_version=__version__,
    )
    # A simulation's system reaches the store before its first segment does.
    for name, path in pinned_files.items():
        store.pin(Path(path), f"{sim_dir}/{name}", pinned[name], guard=guard)
    with tempfile.TemporaryDirectory(prefix="mdcampaign-manifest-") as tmp:
        manifest_file = Path(tmp) / layout.MANIFEST
        manifest_file.write_text(manifest_text(manifest))
        # A segment already in the store stays (it is what later segments continue from):
        # this copy was made again after its record here was lost or moved away.
        if not store.put_directory(
            {**segment_files, layout.MANIFEST: manifest_file}, relative_dir, guard=guard, keep_existing=True
        ):
            ours, manifest = manifest, _stored_manifest(store, relative_dir, Path(tmp) / "stored")
            if {n: f["sha256"] for n, f in manifest.files.items()} != {n: f["sha256"] for n, f in ours.files.items()}:
                log.warning(
                    "%s segment %s: the store already holds a copy of it (stored %s); kept that copy, this "
                    "run's is discarded",
                    manifest.simulation,
                    posixpath.basename(relative_dir),
                    manifest.fetched_at,
                )
    if stored is not None:
        stored()
    write_manifest(record_path, manifest)
    log.info(
        "fetched %s segment %s to %s (%d files, %.1f MB)",
        manifest.simulation,
        posixpath.basename(relative_dir),
        store.describe(relative_dir),
        len(files),
        sum(f["bytes"] for f in files.values()) / 1e6,
    )
    return manifest
