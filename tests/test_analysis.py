"""Analysis on real trajectories: joined segments, continuity checks, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mdcampaign.analysis import TrajectoryError, analyze
from mdcampaign.engines.openmm.runner import run_segment
from mdcampaign.protocol import Protocol
from mdcampaign.runs import SegmentTask


@pytest.fixture(scope="module")
def two_segments(prepared_ala, tmp_path_factory):
    setup_dir, base = prepared_ala
    protocol = Protocol(**{**base.__dict__, "segment_ns": 0.002, "target_ns": 0.004})
    root = tmp_path_factory.mktemp("analysis")
    state = setup_dir / "state.xml"
    works = []
    for k in range(2):
        work = root / f"s{k}"
        run_segment(
            SegmentTask(
                "ala/r1",
                k,
                protocol,
                3,
                setup_dir / "system.xml",
                state,
                setup_dir / "topology.pdb",
                work,
                platform="CPU",
                threads=1,
            )
        )
        state = work / "final_state.xml"
        works.append(work)
    return works, setup_dir / "trajectory_topology.pdb", protocol


def outputs(directory):
    names = {
        "rmsd": "rmsd.csv",
        "rg": "rg.csv",
        "rmsf": "rmsf.csv",
        "dssp": "dssp.csv",
        "json": "a.json",
        "png": "a.png",
    }
    return {key: directory / name for key, name in names.items()}


def test_analysis_over_joined_segments(two_segments, tmp_path):
    works, topology, protocol = two_segments
    out = outputs(tmp_path)
    summary = analyze(
        [w / "trajectory.xtc" for w in works],
        [w / "energies.csv" for w in works],
        topology,
        protocol.frame_interval_ps,
        out,
        "ala/r1",
    )
    frames = 2 * protocol.segment_steps // protocol.frame_steps
    assert summary["frames"] == frames
    assert summary["simulated_ns"] == pytest.approx(0.004)
    rmsd = pd.read_csv(out["rmsd"])
    assert len(rmsd) == frames and (rmsd["rmsd_nm"] >= 0).all() and (rmsd["rmsd_nm"] < 0.5).all()
    assert 0.1 < summary["rg_mean_nm"] < 0.5  # a dipeptide
    assert len(pd.read_csv(out["rmsf"])) == 1  # one C-alpha
    assert set(pd.read_csv(out["dssp"]).columns) == {"time_ps", "helix", "strand", "coil"}
    assert 200 < summary["temperature_mean_K"] < 400
    assert out["png"].stat().st_size > 10_000
    assert json.loads(out["json"].read_text())["frames"] == frames


def test_a_missing_segment_is_detected_as_a_time_gap(two_segments, tmp_path):
    works, topology, protocol = two_segments
    with pytest.raises(TrajectoryError, match="time is not continuous"):
        analyze(
            [works[0] / "trajectory.xtc", works[0] / "trajectory.xtc"],
            [works[0] / "energies.csv"] * 2,
            topology,
            protocol.frame_interval_ps,
            outputs(tmp_path),
            "ala/r1",
        )


def test_ligand_and_metal_site_metrics_on_real_structures():
    """The T4 lysozyme L99A cavity with p-xylene, and a zinc finger (cryo-EM, one Cys
    SG missing): each structure against itself, so every number is its start value."""
    import mdtraj

    from mdcampaign.analysis import ligand_metrics, ligand_residues, metal_sites

    data = Path(__file__).parent / "data" / "structures"
    complex_ = mdtraj.load(str(data / "T4L-L99A-p-xylene-complex.pdb.gz"))
    assert [str(r) for r in ligand_residues(complex_.topology)] == ["TMP163"]
    per_frame: dict = {}
    xylene = ligand_metrics(complex_, complex_, per_frame)["TMP163"]
    assert xylene["in_pocket_fraction"] == 1.0 and xylene["rmsd_max_nm"] == 0.0
    contacts = {c["residue"] for c in xylene["contacts"]}
    assert {"LEU84", "VAL87", "TYR88", "ALA99", "LEU118", "PHE153"} <= contacts, "the L99A cavity's walls"
    assert set(per_frame) == {"TMP163_rmsd_nm", "TMP163_centre_shift_nm"}
    zinc = mdtraj.load(str(data / "5A7U-zinc-finger.pdb"))
    (site,) = metal_sites(zinc, zinc, {})
    assert site["metal"] == "ZN162" and site["kept_fraction"] == 1.0
    assert [d["atom"] for d in site["ligands"]] == ["CYS8-SG", "HIS21-NE2", "HIS26-NE2"], "donor atoms only"
    assert ligand_residues(zinc.topology) == [], "an ion is not a ligand"
