"""Structure files: the cheap check at validation time (`inspect_structure`) and the
checks `setup` makes before OpenMM sees a structure. Every refusal is one line that
names the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import STRUCTURES, write_campaign
from mdcampaign.campaign import load_campaign
from mdcampaign.configuration import read_config_file
from mdcampaign.errors import CampaignError
from mdcampaign.structures import WATER_RESIDUES, inspect_structure

WATER_PDB = """\
HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O
HETATM    2  H1  HOH A   1       0.957   0.000   0.000  1.00  0.00           H
HETATM    3  H2  HOH A   1      -0.240   0.927   0.000  1.00  0.00           H
HETATM    4  O   HOH A   2       3.000   0.000   0.000  1.00  0.00           O
END
"""

WATER_GRO = """\
two waters
6
    1SOL     OW    1   0.000   0.000   0.000
    1SOL    HW1    2   0.096   0.000   0.000
    1SOL    HW2    3  -0.024   0.093   0.000
    2SOL     OW    4   0.300   0.000   0.000
    2SOL    HW1    5   0.396   0.000   0.000
    2SOL    HW2    6   0.276   0.093   0.000
   3.00000   3.00000   3.00000
"""

WATER_AND_SALT_PDB = WATER_PDB.replace(
    "END\n",
    """\
HETATM    5 NA    NA A   3       6.000   0.000   0.000  1.00  0.00          NA
HETATM    6 CL    CL A   4       9.000   0.000   0.000  1.00  0.00          CL
END
""",
)


def mmcif(columns: list[str], rows: list[list[str]]) -> str:
    header = "\n".join(f"_atom_site.{name}" for name in columns)
    body = "\n".join(" ".join(row) for row in rows)
    return f"data_test\n#\nloop_\n{header}\n{body}\n#\n"


CIF_COLUMNS = [
    "group_PDB",
    "id",
    "type_symbol",
    "label_atom_id",
    "label_alt_id",
    "label_comp_id",
    "label_asym_id",
    "label_seq_id",
    "Cartn_x",
    "Cartn_y",
    "Cartn_z",
    "auth_seq_id",
    "auth_asym_id",
    "pdbx_PDB_model_num",
]
CIF_ROWS = [
    ["ATOM", "1", "N", "N", ".", "GLY", "A", "1", "-9.009", "4.612", "6.102", "1", "A", "1"],
    ["ATOM", "2", "C", "CA", ".", "GLY", "A", "1", "-9.052", "4.207", "4.651", "1", "A", "1"],
    ["ATOM", "3", "H", "HA2", ".", "GLY", "A", "1", "-9.900", "4.100", "4.300", "1", "A", "1"],
    ["HETATM", "4", "O", "O", ".", "HOH", "B", ".", "1.000", "2.000", "3.000", "101", "B", "1"],
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def without(columns: list[str], rows: list[list[str]], name: str):
    k = columns.index(name)
    return columns[:k] + columns[k + 1 :], [row[:k] + row[k + 1 :] for row in rows]


# --- inspect_structure --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, heavy", [("alanine-dipeptide.pdb", 10), ("villin-1VII.pdb", 295), ("gnnqqny-1YJP.cif", 59)]
)
def test_the_shipped_structures_pass_with_their_heavy_atom_counts(name, heavy):
    assert inspect_structure(STRUCTURES / name) == (None, heavy)


@pytest.mark.parametrize(
    "name, text", [("water.pdb", WATER_PDB), ("water.gro", WATER_GRO), ("water.cif", mmcif(CIF_COLUMNS, [CIF_ROWS[3]]))]
)
def test_a_structure_of_only_water_is_refused(tmp_path, name, text):
    assert inspect_structure(write(tmp_path, name, text)) == ("has no atoms besides water (nothing to simulate)", 0)


def test_a_structure_of_only_water_and_salt_is_refused(tmp_path):
    problem, _ = inspect_structure(write(tmp_path, "salt.pdb", WATER_AND_SALT_PDB))
    assert problem == "has no atoms besides water and salt ions, which setup removes (nothing to simulate)"


def test_water_with_a_solute_is_fine_and_water_is_not_counted(tmp_path):
    solute = (STRUCTURES / "alanine-dipeptide.pdb").read_text().replace("END", WATER_PDB.replace("END\n", "END"))
    assert inspect_structure(write(tmp_path, "solvated.pdb", solute)) == (None, 10)


def test_every_water_name_setup_removes_counts_as_water(tmp_path):
    for name in sorted(WATER_RESIDUES):
        text = f"one water\n1\n{1:5d}{name:<5}{'OW':>5}{1:5d}   0.000   0.000   0.000\n   3.0   3.0   3.0\n"
        problem, _ = inspect_structure(write(tmp_path, "w.gro", text))
        assert problem == "has no atoms besides water (nothing to simulate)", name


def test_only_the_first_model_is_counted(tmp_path):
    model = [
        line
        for line in (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
        if line.startswith(("ATOM", "HETATM"))
    ]
    text = "\n".join(["MODEL        1", *model, "ENDMDL", "MODEL        2", *model, "ENDMDL", "END"]) + "\n"
    assert inspect_structure(write(tmp_path, "nmr.pdb", text)) == (None, 10)
    rows = CIF_ROWS + [row[:-1] + ["2"] for row in CIF_ROWS]
    assert inspect_structure(write(tmp_path, "nmr.cif", mmcif(CIF_COLUMNS, rows))) == (None, 2)


@pytest.mark.parametrize("missing", ["Cartn_x", "Cartn_y", "Cartn_z"])
def test_an_mmcif_without_a_coordinate_column_is_refused(tmp_path, missing):
    path = write(tmp_path, "flat.cif", mmcif(*without(CIF_COLUMNS, CIF_ROWS, missing)))
    assert inspect_structure(path) == (f"has no _atom_site.{missing} column (its atoms have incomplete coordinates)", 0)


def test_the_real_mmcif_without_cartn_z_is_refused(tmp_path):
    lines = (STRUCTURES / "gnnqqny-1YJP.cif").read_text().splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("_atom_site.")]
    z = next(k for k, i in enumerate(header) if lines[i].strip() == "_atom_site.Cartn_z")
    edited = []
    for i, line in enumerate(lines):
        if i == header[z]:
            continue
        if line.startswith(("ATOM ", "HETATM ")):
            fields = line.split()
            line = " ".join(fields[:z] + fields[z + 1 :])
        edited.append(line)
    path = write(tmp_path, "1YJP-flat.cif", "\n".join(edited) + "\n")
    assert inspect_structure(path) == ("has no _atom_site.Cartn_z column (its atoms have incomplete coordinates)", 0)


def test_mmcif_columns_are_found_by_name_not_position(tmp_path):
    """type_symbol and the residue name moved to the end: the count must not change."""
    columns, rows = list(CIF_COLUMNS), [list(row) for row in CIF_ROWS]
    for name in ("type_symbol", "label_comp_id"):
        k = columns.index(name)
        columns.append(columns.pop(k))
        for row in rows:
            row.append(row.pop(k))
    assert inspect_structure(write(tmp_path, "reordered.cif", mmcif(columns, rows))) == (None, 2)
    # Tags are case-insensitive, quoted values may hold spaces, rows may span lines.
    text = mmcif(
        [c.lower() for c in CIF_COLUMNS],
        [CIF_ROWS[0], ["ATOM", "2", "C", '"C A"', ".", "GLY", "A", "1", "-9.052\n", "4.207", "4.651", "1", "A", "1"]],
    )
    assert inspect_structure(write(tmp_path, "odd.cif", text)) == (None, 2)
    shipped = (STRUCTURES / "gnnqqny-1YJP.cif").read_text()
    assert inspect_structure(write(tmp_path, "shipped.cif", shipped.replace("Cartn_z", "CARTN_Z"))) == (None, 59)


def test_inspecting_structures_does_not_import_openmm():
    code = "import sys, mdcampaign.structures, mdcampaign.campaign; sys.exit('openmm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- as users see it --------------------------------------------------------------


def validation_message(directory: Path) -> str:
    with pytest.raises(CampaignError) as caught:
        load_campaign(read_config_file(directory / "config" / "config.yaml"), "config/config.yaml", base_dir=directory)
    message = str(caught.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize(
    "name, text, expect",
    [
        ("water.pdb", WATER_PDB, "'water.pdb' has no atoms besides water (nothing to simulate)"),
        ("water.gro", WATER_GRO, "'water.gro' has no atoms besides water (nothing to simulate)"),
        (
            "flat.cif",
            mmcif(*without(CIF_COLUMNS, CIF_ROWS, "Cartn_z")),
            "'flat.cif' has no _atom_site.Cartn_z column (its atoms have incomplete coordinates)",
        ),
    ],
)
def test_validation_refuses_them_in_one_line(tmp_path, name, text, expect):
    directory = write_campaign(tmp_path / "campaign", systems=[{"id": "bad", "structure": name, "replicas": 1}])
    write(directory, name, text)
    assert validation_message(directory) == f"config/systems.tsv, line 2 (id 'bad'), column structure: {expect}"


def duplicated_atom_pdb(directory: Path) -> Path:
    """Alanine dipeptide with the alanine's O moved onto its CB."""
    lines = (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
    cb = next(line for line in lines if line.startswith("ATOM") and line[12:16].strip() == "CB")
    o = next(i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "O")
    lines[o] = lines[o][:30] + cb[30:54] + lines[o][54:]
    return write(directory, "stacked.pdb", "\n".join(lines) + "\n")


def test_setup_refuses_atoms_on_top_of_each_other_in_one_line(tmp_path):
    """Real OpenMM on the CPU: without the check, minimization makes NaN."""
    from mdcampaign.engines.openmm.setup import prepare

    directory = write_campaign(
        tmp_path / "campaign", systems=[{"id": "stacked", "structure": "stacked.pdb", "replicas": 1}]
    )
    duplicated_atom_pdb(directory)
    campaign = load_campaign(
        read_config_file(directory / "config" / "config.yaml"), "config/config.yaml", base_dir=directory
    )  # cheap validation lets it through: coordinates are setup's
    system = campaign.systems["stacked"]
    out = directory / "results" / "systems" / "stacked"
    with pytest.raises(CampaignError) as caught:
        prepare(directory / system.structure, system.protocol, out, platform="CPU", threads=1)
    message = str(caught.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert message == (
        f"structure '{directory / 'stacked.pdb'}': atoms ALA 2 CB (chain A) and ALA 2 O (chain A) are 0.000 nm "
        "apart, closer than 0.01 nm: duplicated or overlapping atoms; remove the duplicates or fix their coordinates"
    )
    assert not (out / "system.xml").exists()


def test_setup_counts_the_pairs_and_names_the_closest(tmp_path):
    from openmm import app

    from mdcampaign.repair import check_overlapping_atoms

    lines = (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
    atoms = [line for line in lines if line.startswith(("ATOM", "HETATM"))]
    # A duplicated ATOM line (the same atom twice), and an added atom 0.005 nm from NME's N.
    n = next(line for line in atoms if line[12:16].strip() == "N" and line[17:20] == "NME")
    near = f"HETATM   12  C1  XYZ B   4    {float(n[30:38]) + 0.05:8.3f}{n[38:54]}  1.00  0.00           C"
    text = "\n".join(atoms + [atoms[4], near]) + "\nEND\n"
    pdb = app.PDBFile(str(write(tmp_path, "twice.pdb", text)))
    with pytest.raises(CampaignError) as caught:
        check_overlapping_atoms(pdb.topology, pdb.positions, Path("twice.pdb"))
    assert str(caught.value).startswith(
        "structure 'twice.pdb': atoms ALA 2 CA (chain A) and ALA 2 CA (chain A) are 0.000 nm apart, "
        "closer than 0.01 nm (2 such pairs):"
    )


@pytest.mark.parametrize("name", ["alanine-dipeptide.pdb", "villin-1VII.pdb", "gnnqqny-1YJP.cif"])
def test_real_structures_have_no_overlapping_atoms(name):
    from mdcampaign.repair import check_overlapping_atoms, read_structure

    fixer, _ = read_structure(STRUCTURES / name)
    check_overlapping_atoms(fixer.topology, fixer.positions, STRUCTURES / name)


def test_alternate_locations_are_not_overlapping_atoms(tmp_path):
    """Alternate conformations a hair apart: setup keeps the one with the highest
    occupancy (the first on a tie)."""
    from mdcampaign.repair import check_overlapping_atoms, read_structure

    lines = (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith("ATOM") and line[17:20] == "ALA":
            out.append(line[:16] + "A" + line[17:54] + "  0.50" + line[60:])
            out.append(
                line[:16] + "B" + line[17:30] + f"{float(line[30:38]) + 0.02:8.3f}" + line[38:54] + "  0.50" + line[60:]
            )
        else:
            out.append(line)
    path = write(tmp_path, "altloc.pdb", "\n".join(out) + "\n")
    fixer, _ = read_structure(path)
    assert fixer.topology.getNumAtoms() == 10
    check_overlapping_atoms(fixer.topology, fixer.positions, path)


@pytest.mark.parametrize(
    "name, text, expect",
    [
        ("water.pdb", WATER_PDB, "has no atoms besides water (nothing to simulate)"),
        (
            "flat.cif",
            mmcif(*without(CIF_COLUMNS, CIF_ROWS, "Cartn_z")),
            "has no _atom_site.Cartn_z column (its atoms have incomplete coordinates)",
        ),
    ],
)
def test_setup_repeats_the_validation_check(tmp_path, name, text, expect):
    """Setup may run where nobody validated the campaign: the same line, not an OpenMM traceback."""
    from mdcampaign.repair import repair

    path = write(tmp_path, name, text)
    with pytest.raises(CampaignError) as caught:
        repair(path, default_protocol())
    assert str(caught.value) == f"structure '{path}' {expect}"


def test_setup_refuses_coordinates_that_are_not_numbers(tmp_path):
    from mdcampaign.repair import repair

    lines = (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "CB")
    lines[k] = lines[k][:30] + f"{'nan':>8}" + lines[k][38:]
    path = write(tmp_path, "nan.pdb", "\n".join(lines) + "\n")
    with pytest.raises(CampaignError) as caught:
        repair(path, default_protocol())
    assert str(caught.value) == f"structure '{path}': atom ALA 2 CB (chain A) has coordinates that are not numbers"


def default_protocol():
    from conftest import _schema_defaults
    from mdcampaign.protocol import Protocol

    return Protocol(**_schema_defaults())


def test_an_mmcif_file_saved_with_a_pdb_name_is_read_as_mmcif(tmp_path):
    import gzip

    from mdcampaign.repair import read_structure
    from mdcampaign.structures import inspect_structure

    source = Path(__file__).parent / "data" / "structures" / "1YJP.cif.gz"
    misnamed = tmp_path / "1yjp.pdb"
    misnamed.write_bytes(gzip.decompress(source.read_bytes()))
    assert inspect_structure(misnamed) == inspect_structure(source)
    fixer, info = read_structure(misnamed)
    assert info["read_as"] == "mmCIF" and fixer.topology.getNumResidues() == 7 + 7  # GNNQQNY and its waters
