"""A segment's records, typed, read and written here only: its own record
(:class:`SegmentRecord`, ``segment.json``, written by the engine that ran it, built by
:func:`segment_record` for every engine) and its manifest (:class:`Manifest`,
``manifest.json``: what the store holds for the segment, with the segment record in
it). The manifest is in the store, next to the segment's data, and in the campaign's
results/ (where planning reads it); both files keep the keys they always had, so that
records written by earlier versions read the same."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import DataError
from .files import atomic_write_text
from .runs import SegmentTask, clock, iso_time


@dataclass(frozen=True)
class SegmentRecord:
    """What a finished segment is, for any engine: its steps, frames, speed and every run
    that worked on it (host, Slurm job, slot, platform, why it stopped)."""

    simulation: str
    segment: int
    engine: str
    first_step: int
    last_step: int
    timestep_fs: float
    frames: int
    frame_interval_ps: float
    seed: int | None
    platform: str
    ns_per_day: float | None
    runs: list
    finished_at: str
    clock: str | None = None  # whose clock finished_at and the runs' times are by (runs.clock)
    clock_offset_s: float | None = None
    engine_info: dict = field(default_factory=dict)  # the engine's own: its version, checksums

    @property
    def simulated_ns(self) -> float:
        return round((self.last_step - self.first_step) * self.timestep_fs * 1e-6, 9)

    @property
    def time_start_ps(self) -> float:
        return round(self.first_step * self.timestep_fs / 1000.0, 6)

    @property
    def time_end_ps(self) -> float:
        return round(self.last_step * self.timestep_fs / 1000.0, 6)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "engine_info"}
        data.update(simulated_ns=self.simulated_ns, time_start_ps=self.time_start_ps, time_end_ps=self.time_end_ps)
        return {**self.engine_info, **data}

    @classmethod
    def from_json(cls, data: dict) -> SegmentRecord:
        known = {f.name for f in fields(cls)} - {"engine_info"}
        derived = {"simulated_ns", "time_start_ps", "time_end_ps"}
        values = {key: data.get(key) for key in known}
        values["runs"] = data.get("runs") or []
        values["engine"] = data.get("engine", "openmm")  # records from before a second engine
        return cls(**values, engine_info={k: v for k, v in data.items() if k not in known | derived})


def segment_record(
    task: SegmentTask, frames: int, platform: str, runs: list, ns_per_day: float | None, seed: int, **engine_info
) -> dict:
    """The record a runner writes as ``segment.json`` when segment ``task`` is complete:
    the same fields for every engine, with the engine's own (``engine_info``) beside them.
    ``seed``: the random seed the segment's dynamics drew from."""
    record = SegmentRecord(
        simulation=task.name,
        segment=task.segment,
        engine=task.protocol.engine,
        first_step=task.first_step,
        last_step=task.last_step,
        timestep_fs=task.protocol.timestep_fs,
        frames=frames,
        frame_interval_ps=task.protocol.frame_interval_ps,
        seed=seed,
        platform=platform,
        ns_per_day=ns_per_day,
        runs=runs,
        finished_at=iso_time(time.time()),
        **clock(task.work_dir),
        engine_info=engine_info,
    )
    return record.to_json()


@dataclass(frozen=True)
class Manifest:
    """What the store holds for one segment: its files with their checksums, the
    simulation's pinned files, the protocol and seed it ran with, the site, and the
    segment's own record."""

    simulation: str
    segment: int
    store: str
    path: str  # the segment's folder, relative to the store
    files: dict  # name -> {"sha256", "bytes"}
    pinned: dict  # the simulation's pinned files: name -> sha256
    protocol: dict | None
    seed: int | None
    site: str | None
    info: SegmentRecord
    fetched_at: str
    fetched_by: str | None = None
    clock: str | None = None
    clock_offset_s: float | None = None
    mdcampaign_version: str | None = None  # None: written before versions were recorded

    def to_json(self) -> dict:
        data = asdict(self)
        data["info"] = self.info.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        values = {f.name: data.get(f.name) for f in fields(cls)}
        values["info"] = SegmentRecord.from_json(data.get("info") or {})
        values["files"] = data.get("files") or {}
        values["pinned"] = data.get("pinned") or {}
        return cls(**values)


def manifest_text(manifest: Manifest) -> str:
    """A manifest as it is stored: the same bytes wherever it is written."""
    return json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write a record atomically, unless the same one is there already."""
    text = manifest_text(manifest)
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def read_manifest(path: str | Path, missing_ok: bool = False) -> Manifest | None:
    """A segment's manifest; None if it does not exist and ``missing_ok``. A missing
    (unless ``missing_ok``) or damaged record is a DataError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        if missing_ok:
            return None
        raise DataError(f"segment manifest {path} is missing") from None
    except (ValueError, UnicodeDecodeError):
        raise DataError(
            f"segment manifest {path} is damaged (not valid JSON): move it away and run again; the segment is "
            "fetched again from scratch, or run again if it is gone"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("info", {}), dict):
        raise DataError(f"segment manifest {path} is damaged (not a JSON object)")
    try:
        return Manifest.from_json(data)
    except (TypeError, ValueError):
        raise DataError(f"segment manifest {path} is damaged (unexpected fields)") from None


def read_manifests(paths) -> list[Manifest]:
    """The readable records among ``paths`` (a listing that may hold a damaged one:
    planning tools show what they can)."""
    manifests = []
    for path in paths:
        try:
            manifests.append(read_manifest(path))
        except DataError:
            continue
    return manifests


def write_fetched_marker(path: str | Path, manifest: Manifest) -> None:
    """The fetch rule's output for a segment now in the store (layout.SEGMENT_MARKER)."""
    atomic_write_text(path, json.dumps({"fetched_at": manifest.fetched_at}) + "\n")


def read_segment_record(path: str | Path) -> SegmentRecord:
    """A segment's own record (``segment.json``), as its runner wrote it."""
    return SegmentRecord.from_json(json.loads(Path(path).read_text()))
