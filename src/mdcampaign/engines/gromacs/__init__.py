"""The GROMACS engine (`gmx`, 2022 or newer): built for CPU clusters; amber99sb-ildn in
explicit water, and a lab's own GROMACS inputs run as given. Its modules:
``forcefields`` (what it cannot do with a protocol; imports nothing), ``gmx`` (calling
gmx and reading what it says), ``mdp`` (run parameters), ``setup`` (structure to
equilibrated system), ``inputs`` (a lab's own .tpr or .gro/.top/.mdp; one tpr per
replica), ``energies`` (.edr files), ``ligands`` (a system's ligands as molecule types, from the
OpenMM engine's parameters), ``runner`` (restartable segments with mdrun)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ... import layout
from ...errors import CampaignError
from ..base import Engine

# A lab's own inputs: systems-table column -> (key in System.own_inputs, file suffix).
INPUT_COLUMNS = {
    "gromacs_topology": ("top", ".top"),
    "gromacs_mdp": ("mdp", ".mdp"),
    "gromacs_index": ("ndx", ".ndx"),
}
TPR_MAGIC = b"VERSION"  # near the start of every .tpr


class GromacsEngine(Engine):
    name = "gromacs"
    supports_ligands = True
    files = layout.EngineFiles(system="system.tpr", setup_state="start.cpt", final_state="final_state.cpt")
    install_hint = (
        "install GROMACS: `apt install gromacs` (Debian/Ubuntu), `module load gromacs` (TACC and most "
        "clusters), or `conda install -c conda-forge gromacs`; or point MDCAMPAIGN_GMX at its gmx"
    )
    summary = (
        "`gmx` 2022 or newer, for CPU clusters: `forcefield: amber99sbildn` with `water_model` tip3p, spce or "
        "tip4pew, explicit solvent, `ph` 6.1-8.1 or any with `protonation`, ligands (GAFF2 + AM1-BCC, as "
        "OpenMM's); other combinations are refused in one line each; or a lab's own GROMACS inputs (`structure` a `.tpr`, or the `gromacs_*` columns), run as given."
    )

    def problems(self, protocol) -> Iterator[str]:
        from .forcefields import problems

        return problems(protocol)

    def version(self) -> str | None:
        from .gmx import available

        return available()

    def problem(self) -> str | None:
        from .gmx import gmx_problem

        return gmx_problem()

    def names_own_inputs(self, row: dict) -> str | None:
        given = [column for column in INPUT_COLUMNS if row.get(column)]
        if Path(row.get("structure", "")).suffix.lower() == ".tpr":
            return "a .tpr"
        return f"GROMACS inputs ({', '.join(given)})" if given else None

    def own_inputs(self, row: dict, where: str, base_dir: Path) -> dict[str, Path]:
        """A .tpr as the structure (run as given: one replica, a tpr fixes its seeds),
        or a .gro structure with gromacs_topology and gromacs_mdp (and gromacs_index)."""
        structure = Path(row["structure"])
        given = {column: row[column] for column in INPUT_COLUMNS if row.get(column)}
        if structure.suffix.lower() != ".tpr" and not given:
            return {}
        inputs = {}
        if structure.suffix.lower() == ".tpr":
            if given:
                raise CampaignError(
                    f"{where}, column {next(iter(given))}: give either a .tpr structure or a .gro "
                    "with gromacs_topology and gromacs_mdp, not both"
                )
            if row.get("replicas", 1) > 1:
                raise CampaignError(
                    f"{where}, column replicas: a .tpr runs as given, so its {row['replicas']} replicas would be "
                    "identical; give the .gro, .top and .mdp (columns gromacs_topology, gromacs_mdp) to run "
                    "replicas with their own random seeds"
                )
            inputs["tpr"] = structure
        else:
            missing = [c for c in ("gromacs_topology", "gromacs_mdp") if c not in given]
            if missing or structure.suffix.lower() != ".gro":
                problem = (
                    f"{' and '.join(missing)} missing"
                    if missing
                    else f"the structure must be the .gro these inputs go with (got '{structure.name}')"
                )
                raise CampaignError(
                    f"{where}, column {missing[0] if missing else 'structure'}: a lab's own GROMACS "
                    f"inputs are a .gro structure, gromacs_topology and gromacs_mdp: {problem}"
                )
            inputs["gro"] = structure
            for column, text in given.items():
                key, suffix = INPUT_COLUMNS[column]
                if Path(text).suffix.lower() != suffix:
                    raise CampaignError(f"{where}, column {column}: expected a {suffix} file (got '{text}')")
                inputs[key] = Path(text)
        for key, path in inputs.items():
            resolved = path if path.is_absolute() else base_dir / path
            column = next((c for c, (k, _) in INPUT_COLUMNS.items() if k == key), "structure")
            if not resolved.is_file():
                state = "is a directory" if resolved.is_dir() else "does not exist"
                raise CampaignError(f"{where}, column {column}: file '{path}' {state}")
            if key == "tpr":
                with open(resolved, "rb") as handle:
                    if TPR_MAGIC not in handle.read(256):
                        raise CampaignError(f"{where}, column structure: '{path}' is not a GROMACS run input (.tpr)")
        return inputs

    def prepare(self, inputs, protocol, out_dir, platform, threads, seed, ligands=()) -> dict:
        if "structure" in inputs:
            from .setup import prepare

            return prepare(inputs["structure"], protocol, out_dir, threads, seed, ligands)
        from .inputs import import_inputs

        return import_inputs(**inputs, out_dir=out_dir, protocol=protocol)

    def simulation_system(self, setup_dir: Path, seed: int, work_dir: Path) -> Path:
        """Replicas share the equilibrated state and differ by their random seeds, which
        a tpr holds: each simulation gets its own, made once (grompp) in its first
        segment's work folder. A lab's .tpr runs as given (one replica)."""
        from .inputs import can_reseed, replica_tpr

        if not can_reseed(setup_dir):
            return setup_dir / self.files.system
        replica = work_dir / f"replica-{seed}.tpr"
        if not replica.exists():
            work_dir.mkdir(parents=True, exist_ok=True)
            partial = work_dir / f".replica-{seed}.partial.tpr"
            replica_tpr(setup_dir, seed, partial)
            os.replace(partial, replica)
        return replica

    def setup_state(self, setup_dir: Path) -> Path | None:
        state = setup_dir / self.files.setup_state
        return state if state.exists() else None  # a lab's own inputs start from their tpr

    def run_segment(self, task):
        from .runner import run_segment

        return run_segment(task)

    def checkpoint_step(self, work_dir: Path) -> int | None:
        from .runner import own_checkpoint_step

        return own_checkpoint_step(work_dir)

    def parked(self, work_dir: Path) -> tuple[int, list[Path]] | None:
        from .runner import parked_files

        return parked_files(work_dir)
