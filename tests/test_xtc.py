"""Frame-level XTC/CSV surgery used on restart."""

from __future__ import annotations

import shutil

import mdtraj
import pytest
from mdtraj.formats import XTCTrajectoryFile

from mdcampaign import xtc
from mdcampaign.engines.openmm.runner import run_segment
from mdcampaign.runs import SegmentTask


@pytest.fixture(scope="module")
def segment_files(prepared_ala, tmp_path_factory):
    setup_dir, protocol = prepared_ala
    work = tmp_path_factory.mktemp("xtc") / "work"
    run_segment(
        SegmentTask(
            "ala/r1",
            0,
            protocol,
            3,
            setup_dir / "system.xml",
            setup_dir / "state.xml",
            setup_dir / "topology.pdb",
            work,
            platform="CPU",
            threads=1,
        )
    )
    return work, setup_dir / "trajectory_topology.pdb"


def test_frame_offsets_agree_with_mdtraj(segment_files):
    work, _ = segment_files
    with XTCTrajectoryFile(str(work / "trajectory.xtc")) as handle:
        expected = [int(offset) for offset in handle.offsets]
    assert xtc.frame_offsets(work / "trajectory.xtc") == expected


def test_torn_last_frame_is_ignored_and_cut(segment_files, tmp_path):
    work, topology = segment_files
    path = tmp_path / "t.xtc"
    shutil.copy(work / "trajectory.xtc", path)
    complete = xtc.count_frames(path)
    data = path.read_bytes()
    path.write_bytes(data + data[:70])  # half of another frame, as after a kill mid-write
    assert xtc.count_frames(path) == complete
    xtc.truncate_frames(path, complete - 3)
    assert mdtraj.load(str(path), top=str(topology)).n_frames == complete - 3
    assert path.read_bytes() == data[: xtc.frame_offsets(work / "trajectory.xtc")[complete - 3]]


def test_csv_rows_counted_and_cut_including_a_torn_row(segment_files, tmp_path):
    work, _ = segment_files
    path = tmp_path / "e.csv"
    shutil.copy(work / "energies.csv", path)
    rows = xtc.count_rows(path)
    with open(path, "a") as handle:
        handle.write("12345,1.0,-3")  # torn row: no newline
    assert xtc.count_rows(path) == rows
    xtc.truncate_rows(path, 4)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("step,")
    with pytest.raises(ValueError):
        xtc.truncate_rows(path, 10)
