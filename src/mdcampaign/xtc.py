"""Frame-level surgery on XTC files and CSV tables, for exact restarts.

A segment killed at any moment leaves a trajectory and an energies table that may run
past its last checkpoint, and may end in a half-written frame or row. On restart both
are cut back to exactly what the checkpoint covers, then appended to.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

XTC_MAGIC = 1995
_HEADER = struct.Struct(">iiif9fi")  # magic, natoms, step, time, box[9], natoms again
_INT = struct.Struct(">i")


def frame_offsets(path: str | Path) -> list[int]:
    """Byte offsets of every *complete* frame; a torn last frame is left out."""
    offsets = []
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        position = 0
        while position + _HEADER.size <= size:
            handle.seek(position)
            header = handle.read(_HEADER.size)
            magic, natoms, *_ = _HEADER.unpack(header)
            if magic != XTC_MAGIC:
                break
            if natoms <= 9:
                # Small systems are stored uncompressed: 3 floats per atom.
                length = _HEADER.size + 12 * natoms
            else:
                # precision, minint[3], maxint[3], smallidx, then a byte count and the
                # compressed bytes padded to a multiple of 4.
                handle.seek(position + _HEADER.size + 4 * 8)
                raw = handle.read(4)
                if len(raw) < 4:
                    break
                (nbytes,) = _INT.unpack(raw)
                length = _HEADER.size + 4 * 8 + 4 + ((nbytes + 3) // 4) * 4
            if position + length > size:
                break
            offsets.append(position)
            position += length
    return offsets


def count_frames(path: str | Path) -> int:
    return len(frame_offsets(path)) if os.path.exists(path) else 0


def truncate_frames(path: str | Path, frames: int) -> None:
    """Keep the first `frames` complete frames of an XTC file."""
    offsets = frame_offsets(path)
    if frames > len(offsets):
        raise ValueError(f"{path} has {len(offsets)} complete frames, cannot keep {frames}")
    end = offsets[frames] if frames < len(offsets) else _end_of_frame(path, offsets)
    with open(path, "rb+") as handle:
        handle.truncate(end)


def _end_of_frame(path, offsets) -> int:
    """End of the last complete frame (the file may continue with a torn frame)."""
    if not offsets:
        return 0
    # The scan stops at the first incomplete frame, so re-scan from the last offset.
    with open(path, "rb") as handle:
        handle.seek(offsets[-1])
        header = handle.read(_HEADER.size)
        natoms = _HEADER.unpack(header)[1]
        if natoms <= 9:
            return offsets[-1] + _HEADER.size + 12 * natoms
        handle.seek(offsets[-1] + _HEADER.size + 4 * 8)
        (nbytes,) = _INT.unpack(handle.read(4))
        return offsets[-1] + _HEADER.size + 4 * 8 + 4 + ((nbytes + 3) // 4) * 4


def count_rows(path: str | Path) -> int:
    """Complete data rows (newline-terminated, after the header) of a CSV file."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as handle:
        lines = handle.read().count(b"\n")
    return max(0, lines - 1)


def truncate_rows(path: str | Path, rows: int) -> None:
    """Keep the header and the first `rows` complete data rows of a CSV file."""
    with open(path, "rb+") as handle:
        data = handle.read()
        position = -1
        for _ in range(rows + 1):
            position = data.find(b"\n", position + 1)
            if position < 0:
                raise ValueError(f"{path} has fewer than {rows} complete rows")
        handle.truncate(position + 1)
