"""A segment's record (its manifest, `manifest.json`): what the store holds for one
segment, read and written here only. The same file is in the store, next to the
segment's data, and in the campaign's results/ (where planning reads it)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DataError
from .files import atomic_write_text


def manifest_text(manifest: dict) -> str:
    """A manifest as it is stored: the same bytes wherever it is written."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write_manifest(path: str | Path, manifest: dict) -> None:
    """Write a record atomically, unless the same one is there already."""
    text = manifest_text(manifest)
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def read_manifest(path: str | Path, missing_ok: bool = False) -> dict | None:
    """A segment's record; None if it does not exist and ``missing_ok``. A missing
    (unless ``missing_ok``) or damaged record is a DataError naming the file."""
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        if missing_ok:
            return None
        raise DataError(f"segment manifest {path} is missing") from None
    except (ValueError, UnicodeDecodeError):
        raise DataError(
            f"segment manifest {path} is damaged (not valid JSON): move it away and run again; the segment is "
            "fetched again from scratch, or run again if it is gone"
        ) from None
    if not isinstance(manifest, dict):
        raise DataError(f"segment manifest {path} is damaged (not a JSON object)")
    return manifest


def read_manifests(paths) -> list[dict]:
    """The readable records among ``paths`` (a listing that may hold a damaged one:
    planning tools show what they can)."""
    manifests = []
    for path in paths:
        try:
            manifests.append(read_manifest(path))
        except DataError:
            continue
    return manifests
