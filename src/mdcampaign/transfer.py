"""`stage` and `fetch`: moving a segment's files between the store and scratch.

The store only ever receives complete, verified data: a segment is copied into a
hidden partial directory, its checksums are verified, and only then is it renamed
into place; the manifest (paths and checksums) is written last. A failing fetch
leaves any earlier good copy untouched.
"""

from __future__ import annotations

import json
import logging
import os
import platform as host_platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from . import engine, layout
from .errors import TransferError

log = logging.getLogger(__name__)


def file_record(path: Path) -> dict:
    return {"sha256": engine.sha256_file(path), "bytes": path.stat().st_size}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _copy_verified(source: Path, target: Path, sha256: str | None = None) -> dict:
    """Copy one file atomically; verify the copy against the source's checksum."""
    record = file_record(source)
    if sha256 is not None and record["sha256"] != sha256:
        raise TransferError(f"{source} does not match its recorded checksum (corrupted or replaced)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, tmp)
    engine.fsync_file(tmp)
    if engine.sha256_file(tmp) != record["sha256"]:
        tmp.unlink(missing_ok=True)
        raise TransferError(f"copy of {source} to {target} is corrupt (checksum mismatch)")
    os.replace(tmp, target)
    return record


def read_manifest(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TransferError(f"segment manifest {path} is missing") from None
    except json.JSONDecodeError:
        raise TransferError(f"segment manifest {path} is damaged (not valid JSON)") from None


def stage_segment(sources: dict[str, Path], checksums: dict[str, str], staged: dict[str, Path], info: dict) -> dict:
    """Copy the files a segment starts from into its scratch input directory.

    ``sources`` and ``staged`` map the staged names (system.xml, start_state.xml, ...)
    to source and destination paths; ``checksums`` holds the expected sha256 of sources
    that came from the store. Writes ``stage.json`` (destination ``staged['stage.json']``).
    """
    files = {}
    for name, source in sources.items():
        files[name] = _copy_verified(Path(source), Path(staged[name]), checksums.get(name))
    record = {**info, "files": files, "sources": {n: str(p) for n, p in sources.items()}, "staged_at": _now()}
    engine.atomic_write_json(staged["stage.json"], record)
    log.info("staged %s segment %s: %s", info.get("simulation"), info.get("segment"), ", ".join(files))
    return record


def fetch_segment(segment_files: dict[str, Path], pinned_files: dict[str, Path], stage_record: dict,
                  store: Path, sim_dir: str, segment: str, record_path: Path) -> dict:
    """Copy a finished segment from scratch to the store and write its manifest.

    ``segment_files``: name -> scratch path of the segment's outputs.
    ``pinned_files``: name -> scratch path of files pinned once per simulation (only
    given for segment 0). ``sim_dir`` is the simulation's directory relative to the
    store. The manifest is written into the store's segment directory and, if that is
    not the same file, to ``record_path`` (the local record that planning reads).
    """
    store = Path(store)
    target = store / sim_dir / "segments" / segment
    partial = target.with_name(f".{segment}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files = {}
    try:
        for name, source in segment_files.items():
            files[name] = _copy_verified(Path(source), partial / name)
        pinned = {}
        for name, source in pinned_files.items():
            pinned[name] = _pin(Path(source), store / sim_dir / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    segment_info = json.loads(Path(segment_files["segment.json"]).read_text())
    manifest = {
        "simulation": stage_record["simulation"],
        "segment": int(segment),
        "store": str(store),
        "path": f"{sim_dir}/segments/{segment}",
        "files": files,
        "pinned": pinned or stage_record.get("pinned", {}),
        "protocol": stage_record.get("protocol"),
        "seed": stage_record.get("seed"),
        "info": segment_info,
        "fetched_at": _now(),
        "fetched_by": host_platform.node(),
    }
    engine.atomic_write_json(partial / "manifest.json", manifest)
    _swap_into_place(partial, target)
    if Path(record_path).resolve() != (target / "manifest.json").resolve():
        engine.atomic_write_json(record_path, manifest)
    log.info("fetched %s segment %s to %s (%d files, %.1f MB)", manifest["simulation"], segment, target,
             len(files), sum(f["bytes"] for f in files.values()) / 1e6)
    return manifest


def _pin(source: Path, target: Path) -> str:
    """Store a per-simulation file once; an existing identical copy is kept."""
    sha = engine.sha256_file(source)
    if target.exists():
        if engine.sha256_file(target) == sha:
            return sha
        raise TransferError(
            f"{target} already exists with different content: this simulation was started from a "
            "different system; refusing to mix them (move the old results away to start over)"
        )
    _copy_verified(source, target)
    return sha


def _swap_into_place(partial: Path, target: Path) -> None:
    """Rename a verified directory into place. An existing copy is moved aside first
    and removed only once the new one is in place."""
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.replaced-{int(time.time())}")
        os.replace(target, aside)
    os.replace(partial, target)
    engine.fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def store_segment_dir(store: str | Path, system: str, replica: int, segment: str) -> Path:
    return Path(store) / layout.fill(layout.STORE_SEGMENT, system=system, replica=replica, segment=segment)


def store_sim_dir(store: str | Path, system: str, replica: int) -> Path:
    return Path(store) / layout.fill(layout.STORE_SIM, system=system, replica=replica)
