"""A system's small-molecule ligand, as the systems table gives it (its residue name
in the structure and its chemistry); parameterized by ligands.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LigandSpec:
    """A system's small-molecule ligand, as the systems table gives it (see ligands.py)."""

    residue: str  # its residue name in the structure
    chemistry_file: Path | None = None  # SDF/MOL2 with bond orders (and the pose)
    smiles: str | None = None
    charge: int | None = None

    def record(self) -> dict:
        return {
            "residue": self.residue,
            "file": str(self.chemistry_file) if self.chemistry_file else None,
            "smiles": self.smiles,
            "charge": self.charge,
        }

    @classmethod
    def from_record(cls, record: dict) -> LigandSpec:
        return cls(
            record["residue"],
            Path(record["file"]) if record.get("file") else None,
            record.get("smiles"),
            record.get("charge"),
        )


def ligands_record(ligands: tuple[LigandSpec, ...]) -> dict | list | None:
    """A system's ligands as plain data: one ligand's record as it always was (so the
    params of campaigns with one ligand stay as they were), several as a list."""
    if not ligands:
        return None
    return ligands[0].record() if len(ligands) == 1 else [ligand.record() for ligand in ligands]


def ligands_from_record(record: dict | list | None) -> tuple[LigandSpec, ...]:
    if not record:
        return ()
    return tuple(LigandSpec.from_record(item) for item in ([record] if isinstance(record, dict) else record))
