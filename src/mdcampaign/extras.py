"""The optional parts of mdcampaign (pip extras) and what each needs, so that a
missing one is named in one line (by `validate`, `doctor` and the job that would
need it) instead of surfacing as an ImportError's traceback."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    name: str
    purpose: str
    modules: tuple[str, ...]  # Python modules it installs
    tools: tuple[str, ...] = ()  # programs it puts on PATH

    @property
    def install_hint(self) -> str:
        return f"pip install 'mdcampaign[{self.name}]' (or, in a checkout, pip install -e \".[{self.name}]\")"

    def missing(self) -> list[str]:
        """What of it is not installed here (empty: all of it is)."""
        return [tool for tool in self.tools if shutil.which(tool) is None] + [
            module for module in self.modules if importlib.util.find_spec(module) is None
        ]


LIGANDS = Extra(
    "ligands",
    "ligand parameters (GAFF2 + AM1-BCC: AmberTools, RDKit, ParmEd)",
    modules=("rdkit", "parmed"),
    tools=("antechamber", "parmchk2", "sqm"),
)
EXTRAS = (LIGANDS,)


def extra_providing(module: str) -> Extra | None:
    """The extra that installs a (top-level) module, if any."""
    top = module.split(".", 1)[0]
    return next((extra for extra in EXTRAS if top in extra.modules), None)
