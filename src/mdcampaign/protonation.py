"""Protonation states: by pKa computed with PROPKA, or given per residue.

Without a ``protonation`` setting, OpenMM's Modeller gives every residue its most
common state at the pH from standard pKa values (Asp 4.0, Glu 4.4, His 6.5, Lys 10.4),
so a buried Glu or an active-site Asp (HIV protease's Asp25/Asp25') keeps its default
charge. ``propka`` computes each titratable residue's pKa in the structure (PROPKA 3)
and sets Asp, Glu and Lys by it and His to HIP where its pKa is above the pH (a neutral
His keeps Modeller's tautomer choice by hydrogen bonds); explicit states
(``A:D25=ASH``) come last and win. The states are Amber's names, which OpenMM matches
by bonds in every force field (CHARMM's ASPP, GLUP, HSD, HSE, HSP, LSN are the same
residues). Residues bound to a metal keep the state their metal site gives them.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CampaignError

log = logging.getLogger(__name__)

PROPKA = "propka"
# Modeller's standard pKa values (the `maxph` of its hydrogen definitions): the
# default state at a pH.
STANDARD_PKA = {"ASP": 4.0, "GLU": 4.4, "HIS": 6.5, "LYS": 10.4}
# residue -> (its state when protonated, when not); His: HIP, or neutral (None: Modeller's tautomer)
STATES = {"ASP": ("ASH", "ASP"), "GLU": ("GLH", "GLU"), "HIS": ("HIP", None), "LYS": ("LYS", "LYN")}
ALLOWED = {"ASP": ("ASP", "ASH"), "GLU": ("GLU", "GLH"), "HIS": ("HID", "HIE", "HIP"), "LYS": ("LYS", "LYN")}
ONE_LETTER = {"D": "ASP", "E": "GLU", "H": "HIS", "K": "LYS"}
EXPLICIT = re.compile(r"^([A-Za-z0-9]{1,4}):([DEHK])(-?[0-9]{1,5})=([A-Z]{3})$")
# Modeller decides a neutral His's tautomer only above this pH.
NEUTRAL_HIS_PH = 6.51


@dataclass(frozen=True)
class Setting:
    """A protocol's `protonation`, read: whether PROPKA decides, and the explicit states
    as (chain, residue name, residue number, state)."""

    propka: bool
    explicit: tuple[tuple[str, str, str, str], ...]

    @classmethod
    def parse(cls, text: str) -> Setting:
        tokens = [token.strip() for token in text.split(";") if token.strip()]
        use = bool(tokens) and tokens[0] == PROPKA
        explicit = []
        for token in tokens[1:] if use else tokens:
            match = EXPLICIT.match(token)
            if not match:
                raise ValueError(
                    f"protonation: '{token}' is not CHAIN:<D|E|H|K><number>=<state> (e.g. A:D25=ASH), nor {PROPKA} "
                    "(which comes first)"
                )
            chain, letter, number, state = match.groups()
            residue = ONE_LETTER[letter]
            if state not in ALLOWED[residue]:
                raise ValueError(f"protonation: {token}: {residue} takes {', '.join(ALLOWED[residue])}, not {state}")
            explicit.append((chain, residue, number, state))
        return cls(use, tuple(explicit))


def problems(text: str):
    """What is wrong with a `protonation` value, before any structure is read."""
    try:
        Setting.parse(text)
    except ValueError as error:
        yield str(error)


def default_state(residue: str, ph: float) -> str | None:
    protonated, deprotonated = STATES[residue]
    return protonated if ph < STANDARD_PKA[residue] else deprotonated


def choose(topology, positions, text: str, ph: float, fixed: list, structure: Path) -> tuple[list, list, float]:
    """Variants for Modeller.addHydrogens (``fixed``: those already decided, by metal
    sites), the residues whose state differs from the default with why, and the pH to
    give Modeller (above NEUTRAL_HIS_PH where PROPKA found a His neutral below it)."""
    setting = Setting.parse(text)
    variants = list(fixed)
    chosen: list[dict] = []
    residues = {(r.chain.id, r.id): r for r in topology.residues()}
    modeller_ph = ph
    if setting.propka:
        for (chain, number), (name, pka) in pka_values(topology, positions).items():
            residue = residues.get((chain, number))
            if residue is None or residue.name != name or variants[residue.index] is not None:
                continue
            protonated, deprotonated = STATES[name]
            state = protonated if pka > ph else deprotonated
            variants[residue.index] = state
            if name == "HIS" and state is None and ph < NEUTRAL_HIS_PH:
                modeller_ph = NEUTRAL_HIS_PH  # only His is left to Modeller's choice
            if state != default_state(name, ph):
                chosen.append(_record(residue, state or "HID/HIE", f"PROPKA pKa {pka:.2f} at pH {ph:g}", pka))
    for chain, name, number, state in setting.explicit:
        residue = residues.get((chain, number))
        if residue is None:
            raise CampaignError(
                f"structure '{structure}': protonation {chain}:{number}={state}: chain {chain} has no residue {number}"
            )
        if residue.name != name:
            raise CampaignError(
                f"structure '{structure}': protonation {chain}:{number}={state}: residue {number} of chain {chain} "
                f"is {residue.name}, not {name}"
            )
        if fixed[residue.index] is not None:
            raise CampaignError(
                f"structure '{structure}': protonation {chain}:{number}={state}: it binds a metal, whose site "
                f"decides its state ({fixed[residue.index]})"
            )
        chosen = [c for c in chosen if c["residue"] != _label(residue)]
        variants[residue.index] = state
        chosen.append(_record(residue, state, "given in protonation", None))
    if chosen:
        log.info("protonation states: %s", "; ".join(f"{c['residue']} {c['state']} ({c['why']})" for c in chosen))
    return variants, chosen, modeller_ph


def pka_values(topology, positions) -> dict[tuple[str, str], tuple[str, float]]:
    """(chain, residue number) -> (residue name, pKa) of every Asp, Glu, His and Lys,
    computed by PROPKA 3 on the structure (hydrogens are PROPKA's own)."""
    from openmm import app

    try:
        import propka.run
    except ModuleNotFoundError as error:
        raise CampaignError(
            "protonation propka needs PROPKA: pip install propka (it comes with mdcampaign's dependencies)"
        ) from error
    with tempfile.TemporaryDirectory(prefix="mdcampaign-propka-") as folder:
        path = Path(folder) / "structure.pdb"
        with open(path, "w") as handle:
            app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
        chatty = logging.getLogger("propka")
        level = chatty.level
        chatty.setLevel(logging.ERROR)  # its notes on termini and ligands it cannot type
        try:
            molecule = propka.run.single(str(path), optargs=["--quiet"], write_pka=False)
        finally:
            chatty.setLevel(level)
    groups = molecule.conformations[molecule.conformation_names[0]].groups
    return {
        (group.atom.chain_id, str(group.atom.res_num)): (group.residue_type, float(group.pka_value))
        for group in groups
        if group.residue_type in STATES and group.atom.res_name == group.residue_type
    }


def _label(residue) -> str:
    return f"{residue.name} {residue.id} (chain {residue.chain.id})"


def _record(residue, state: str, why: str, pka: float | None) -> dict:
    return {
        "residue": _label(residue),
        "state": state,
        "why": why,
        **({"pka": round(pka, 2)} if pka is not None else {}),
    }
