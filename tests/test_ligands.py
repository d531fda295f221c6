"""Ligands, for real: T4 lysozyme L99A with p-xylene in its cavity (tests/data/structures),
parameterized with GAFF2 and AM1-BCC charges by AmberTools (antechamber, sqm, parmchk2),
cached per ligand, and simulated through the workflow with the ligand staying in its
pocket. Skipped, with the reason, where the ligand tools are not installed."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from openmm import app, unit

from conftest import _schema_defaults, assert_complete, snakemake, write_campaign
from mdcampaign.errors import CampaignError
from mdcampaign.ligand_spec import LigandSpec
from mdcampaign.ligands import missing_tools
from mdcampaign.protocol import Protocol
from mdcampaign.repair import read_structure, repair

DATA = Path(__file__).parent / "data" / "structures"
COMPLEX = DATA / "T4L-L99A-p-xylene-complex.pdb.gz"
XYLENE = "Cc1ccc(C)cc1"

pytestmark = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"ligand tools not installed ({', '.join(missing_tools())}): pip install -e '.[ligands]'",
)


def protocol() -> Protocol:
    return Protocol(**_schema_defaults())


def ligand_residues(fixer) -> list:
    return [r for r in fixer.topology.residues() if r.name == "TMP"]


def test_a_ligand_from_its_mol2_is_parameterized_once_and_matched(tmp_path):
    cache = tmp_path / "ligands"
    fixer, info = repair(COMPLEX, protocol(), (LigandSpec("TMP", chemistry_file=DATA / "p-xylene.mol2"),), cache)
    (ligand,) = ligand_residues(fixer)
    (record,) = info["ligands"]
    assert len(list(ligand.atoms())) == 18 and record["from_cache"] is False and record["copies"] == 1
    assert record["smiles"] == XYLENE and record["net_charge"] == 0
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml", info["ligand_forcefield_file"])
    system = forcefield.createSystem(fixer.topology, nonbondedMethod=app.NoCutoff)
    charges = next(
        system.getForce(k)
        for k in range(system.getNumForces())
        if type(system.getForce(k)).__name__ == "NonbondedForce"
    )
    ligand_charge = sum(charges.getParticleParameters(atom.index)[0]._value for atom in ligand.atoms())
    assert abs(ligand_charge) < 1e-3
    # The same chemistry again, its pose from the structure and its bond orders from SMILES: from the cache.
    again, info2 = repair(COMPLEX, protocol(), (LigandSpec("TMP", smiles=XYLENE),), cache)
    assert info2["ligands"][0]["from_cache"] is True and len(list(cache.iterdir())) == 1
    before = np.array([p._value if hasattr(p, "_value") else p for p in fixer.positions])
    assert len(ligand_residues(again)) == 1 and before.shape[1] == 3


@pytest.mark.parametrize(
    "spec, expect",
    [
        (LigandSpec("TMP", smiles="C1CC"), "ligand_smiles 'C1CC' is not valid SMILES"),
        (LigandSpec("TMP", smiles="Cc1ccccc1"), "do not match ligand_smiles 'Cc1ccccc1'"),
        (LigandSpec("XYZ", smiles=XYLENE), "the structure has no residue XYZ to take the pose from"),
        (
            LigandSpec("TMP", smiles=XYLENE, charge=1),
            "ligand TMP, column ligand_charge: +1 leaves it with an odd number of electrons (57), and AM1-BCC "
            "needs a closed shell; the molecule as read (C8H10) has formal charge +0",
        ),
    ],
)
def test_a_ligand_that_cannot_be_parameterized_fails_in_one_line(tmp_path, spec, expect):
    with pytest.raises(CampaignError) as caught:
        repair(COMPLEX, protocol(), (spec,), tmp_path / "ligands")
    message = str(caught.value)
    assert expect in message and "\n" not in message, message
    assert not any((tmp_path / "ligands").glob("[!.]*")), "no cache entry from a failure"


@pytest.mark.slow
def test_a_protein_ligand_complex_runs_and_the_ligand_stays_in_its_pocket(tmp_path):
    # A solvated protein needs a real minimization before 4 fs steps (the tiny test
    # protocol's 50 iterations let it blow up in restrained equilibration once in CI);
    # 300 iterations reach -364k kJ/mol of 1000's -380k, in 56 s instead of 134 s.
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "t4l-xylene",
                "structure": COMPLEX,
                "replicas": 1,
                "ligand": "TMP",
                "ligand_file": DATA / "p-xylene.mol2",
                "solvent": "explicit",
                "forcefield": "amber14",
                "padding_nm": 0.8,
                "box_shape": "dodecahedron",
            },
        ],
        protocol={"target_ns": 0.002, "equilibration_ps": 2.0, "minimization_max_iterations": 300},
    )
    snakemake(campaign, timeout=1800)
    assert_complete(campaign, {"t4l-xylene/r1": 0.002})
    setup = json.loads((campaign / "results/systems/t4l-xylene/setup.json").read_text())
    assert setup["fix"]["ligands"][0]["smiles"] == XYLENE and (campaign / "results/ligands").is_dir()
    sim = campaign / "results/sims/t4l-xylene/r1"
    topology = str(sim / "trajectory_topology.pdb")
    start = mdtraj.load(topology)
    traj = mdtraj.load(str(sim / "segments/0000/trajectory.xtc"), top=topology)
    protein = start.topology.select("protein and name CA")
    ligand = start.topology.select("resname TMP and not element H")
    traj.superpose(start, atom_indices=protein)
    rmsd = np.sqrt(((traj.xyz[:, ligand] - start.xyz[0, ligand]) ** 2).sum(axis=2).mean(axis=1))
    assert rmsd.max() < 0.2, f"ligand RMSD {rmsd.max():.3f} nm: it left its pocket"
    # the analysis says the same, with its contacts, in analysis.json and the campaign table
    analysis = json.loads((campaign / "results/sims/t4l-xylene/r1/analysis/0001/analysis.json").read_text())
    (name, ligand), *_ = analysis["ligands"].items()
    assert name.startswith("TMP") and ligand["in_pocket_fraction"] == 1.0 and ligand["rmsd_max_nm"] < 0.2
    assert ligand["rmsd_max_nm"] == pytest.approx(rmsd.max(), abs=0.02), "the same RMSD as computed here"
    assert {"LEU84", "ALA99", "LEU118"} & {c["residue"] for c in ligand["contacts"] if c["occupancy"] > 0.5}
    import pandas as pd

    row = pd.read_csv(campaign / "results/summary.tsv", sep="\t").iloc[0]
    assert row["ligand_in_pocket_fraction"] == 1.0 and "LEU" in row["ligand_contacts"]


ADDITIVES = DATA / "4E43-additives.pdb.gz"  # HIV-1 protease dimer: DMSO x4 (two per chain), acetate
DMSO, ACETATE = "CS(C)=O", "CC(=O)[O-]"


def heavy_positions(fixer, name: str) -> list[np.ndarray]:
    positions = np.array(fixer.positions.value_in_unit(unit.nanometer))
    return [
        positions[[a.index for a in residue.atoms() if a.element.symbol != "H"]]
        for residue in fixer.topology.residues()
        if residue.name == name
    ]


def residue_charges(fixer, system, name: str) -> list[float]:
    (nonbonded,) = [force for force in system.getForces() if type(force).__name__ == "NonbondedForce"]
    return [
        sum(nonbonded.getParticleParameters(atom.index)[0]._value for atom in residue.atoms())
        for residue in fixer.topology.residues()
        if residue.name == name
    ]


def test_copies_of_a_ligand_share_its_parameters_and_two_ligands_share_one_forcefield_file(tmp_path):
    cache = tmp_path / "ligands"
    original, _ = read_structure(ADDITIVES, protocol().model, protocol().altloc)
    dimer, info = repair(ADDITIVES, protocol(), (LigandSpec("DMS", smiles=DMSO),), cache)
    (record,) = info["ligands"]
    assert record["copies"] == 4 and record["net_charge"] == 0, "every copy in both chains, one parameter set"
    # each copy where the structure has it (its chosen alternate location), hydrogens added
    expected = heavy_positions(original, "DMS")
    placed = heavy_positions(dimer, "DMS")
    assert len(placed) == 4 and all(
        np.allclose(sorted(map(tuple, got)), sorted(map(tuple, want)), atol=1e-3)
        for got, want in zip(placed, expected, strict=True)
    )
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml", info["ligand_forcefield_file"])
    system = forcefield.createSystem(dimer.topology, nonbondedMethod=app.NoCutoff)
    assert residue_charges(dimer, system, "DMS") == pytest.approx([0.0] * 4, abs=1e-6), "exactly neutral copies"

    both, info = repair(
        ADDITIVES, protocol(), (LigandSpec("DMS", smiles=DMSO), LigandSpec("ACT", smiles=ACETATE)), cache
    )
    dms, act = info["ligands"]
    assert (dms["from_cache"], dms["copies"], act["from_cache"], act["copies"]) == (True, 4, False, 1)
    assert act["net_charge"] == -1 and Path(info["ligand_forcefield_file"]).name == "ligands.xml"
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml", info["ligand_forcefield_file"])
    system = forcefield.createSystem(both.topology, nonbondedMethod=app.NoCutoff)
    assert residue_charges(both, system, "ACT") == pytest.approx([-1.0], abs=1e-6)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("set-")) == sorted(
        Path(r["parameter_folder"]).name for r in info["ligands"]
    ), "one cache entry per distinct ligand"


def test_a_ligand_file_with_fewer_poses_than_the_structure_has_copies_is_refused_in_one_line(tmp_path):
    sdf = tmp_path / "dmso.sdf"
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molecule = Chem.AddHs(Chem.MolFromSmiles(DMSO))
    AllChem.EmbedMolecule(molecule, randomSeed=1)
    Chem.MolToMolFile(molecule, str(sdf))
    with pytest.raises(CampaignError) as caught:
        repair(ADDITIVES, protocol(), (LigandSpec("DMS", chemistry_file=sdf),), tmp_path / "ligands")
    assert "the structure has 4 copies of DMS but ligand_file dmso.sdf has 1 pose(s)" in str(caught.value)
