"""OpenMM's force-field presets: which files a (force field, solvent) choice uses, and
what the OpenMM engine cannot do with a protocol (one line per problem).

The checks read a protocol's keys by name and import nothing, so that validating a
campaign imports no MD engine."""

from __future__ import annotations

from collections.abc import Iterator

# OpenMM's MonteCarloBarostat tries a volume move every this many steps.
BAROSTAT_INTERVAL_STEPS = 25

# Water-model XML per force field. Keys are the `water_model` values of the schema.
WATER_FILES = {
    "amber14": {
        "tip3p": "amber14/tip3p.xml",
        "tip3pfb": "amber14/tip3pfb.xml",
        "spce": "amber14/spce.xml",
        "tip4pew": "amber14/tip4pew.xml",
        "opc": "amber14/opc.xml",
    },
    "amber99sbildn": {
        "tip3p": "tip3p.xml",
        "tip3pfb": "tip3pfb.xml",
        "spce": "spce.xml",
        "tip4pew": "tip4pew.xml",
        "opc": "opc.xml",
    },
    "charmm36": {
        "tip3p": "charmm36_2024/water.xml",
        "spce": "charmm36_2024/spce.xml",
        "tip4pew": "charmm36_2024/tip4pew.xml",
    },
}

PROTEIN_FILES = {
    "amber14": "amber14-all.xml",
    "amber99sbildn": "amber99sbildn.xml",
    "charmm36": "charmm36_2024.xml",
}

# Implicit-solvent XML per force field. amber99sbildn with OBC2 uses amber99_obc.xml,
# which OpenMM implements with the native GBSAOBCForce: on CPU it runs about 7x faster
# than the CustomGBForce-based implicit/*.xml files.
IMPLICIT_FILES = {
    "amber14": {m: f"implicit/{m}.xml" for m in ("obc1", "obc2", "gbn", "gbn2", "hct")},
    "amber99sbildn": {
        "obc2": "amber99_obc.xml",
        **{m: f"implicit/{m}.xml" for m in ("obc1", "gbn", "gbn2", "hct")},
    },
    "charmm36": {},
}

# Modeller.addSolvent's `model` argument for each water model.
MODELLER_WATER = {"tip3p": "tip3p", "tip3pfb": "tip3p", "spce": "spce", "tip4pew": "tip4pew", "opc": "tip4pew"}


def forcefield_files(forcefield: str, solvent: str, water_model: str, implicit_model: str) -> list[str]:
    """The ForceField XML files for a protocol, or ValueError naming what is allowed."""
    protein = PROTEIN_FILES[forcefield]
    if solvent == "explicit":
        choices = WATER_FILES[forcefield]
        if water_model not in choices:
            raise ValueError(
                f"water_model '{water_model}' is not available with forcefield '{forcefield}'; "
                f"choose one of: {', '.join(choices)}"
            )
        return [protein, choices[water_model]]
    choices = IMPLICIT_FILES[forcefield]
    if implicit_model not in choices:
        if not choices:
            raise ValueError(
                f"forcefield '{forcefield}' has no implicit-solvent model in OpenMM; use "
                "solvent 'explicit' or forcefield amber14 / amber99sbildn"
            )
        raise ValueError(
            f"implicit_model '{implicit_model}' is not available with forcefield '{forcefield}'; "
            f"choose one of: {', '.join(choices)}"
        )
    return [protein, choices[implicit_model]]


def problems(protocol) -> Iterator[str]:
    try:
        forcefield_files(protocol.forcefield, protocol.solvent, protocol.water_model, protocol.implicit_model)
    except ValueError as error:
        yield str(error)
    if protocol.explicit and protocol.frame_steps % BAROSTAT_INTERVAL_STEPS:
        yield (
            f"frame_interval_ps ({protocol.frame_interval_ps}) must be a multiple of "
            f"{BAROSTAT_INTERVAL_STEPS} timesteps ({BAROSTAT_INTERVAL_STEPS * protocol.timestep_ps:g} ps), "
            "the barostat interval, so that restarts reproduce the pressure coupling"
        )
