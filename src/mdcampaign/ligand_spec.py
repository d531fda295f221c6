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
