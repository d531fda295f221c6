"""GROMACS's force fields and what the GROMACS engine cannot do with a protocol (one
line per problem). Imports nothing, so that validating a campaign imports no engine."""

from __future__ import annotations

from collections.abc import Iterator

# protocol value -> the name GROMACS's pdb2gmx knows (force fields GROMACS ships).
FORCEFIELDS = {"amber99sbildn": "amber99sb-ildn"}
WATER_MODELS = {"tip3p": "tip3p", "spce": "spce", "tip4pew": "tip4pew"}
PH_RANGE = (6.1, 8.1)
MAX_TIMESTEP_FS = 4.0  # with hmr; without it, campaign.MAX_TIMESTEP_WITHOUT_HMR_FS


def problems(protocol) -> Iterator[str]:
    if protocol.forcefield not in FORCEFIELDS:
        yield (
            f"forcefield '{protocol.forcefield}' is not shipped with GROMACS; the GROMACS engine offers "
            f"{', '.join(FORCEFIELDS)} ({', '.join(FORCEFIELDS.values())}.ff)"
        )
    if not protocol.explicit:
        yield (
            "solvent 'implicit': GROMACS removed implicit solvent in version 2019; use solvent 'explicit' "
            "with the GROMACS engine (or the OpenMM engine for implicit solvent)"
        )
    elif protocol.water_model not in WATER_MODELS:
        yield (
            f"water_model '{protocol.water_model}' is not shipped with GROMACS's amber99sb-ildn.ff; choose one "
            f"of: {', '.join(WATER_MODELS)}"
        )
    if protocol.timestep_fs > MAX_TIMESTEP_FS:
        yield (
            f"timestep_fs {protocol.timestep_fs}: the GROMACS engine allows at most {MAX_TIMESTEP_FS} fs "
            "(with hmr; its leap-frog Langevin integrator is not tested beyond)"
        )
    if not protocol.protonation and not PH_RANGE[0] <= protocol.ph <= PH_RANGE[1]:
        yield (
            f"ph {protocol.ph}: without protonation, pdb2gmx assigns the standard protonation states (pH "
            f"about 7), so the GROMACS engine accepts ph {PH_RANGE[0]}-{PH_RANGE[1]} only; set protonation "
            "(e.g. propka) to give pdb2gmx the states at this pH"
        )
    if protocol.equilibration_steps < 1:
        yield (
            "equilibration_ps 0: the GROMACS engine needs at least one step of equilibration (segment 0 "
            "starts from the equilibration's checkpoint, velocities included)"
        )
