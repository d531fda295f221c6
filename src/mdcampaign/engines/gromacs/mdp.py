"""Run parameters (.mdp) from a protocol: its keys mean the same things as on OpenMM
(docs/guide/gromacs.md has the table)."""

from __future__ import annotations

import re

from ...protocol import Protocol

COMPRESSIBILITY_PER_BAR = 4.5e-5  # water


TAU_P_PS = 2.0


def nstcalcenergy(frame_steps: int) -> int:
    """The largest divisor of the frame interval up to 100 (GROMACS's default): energies
    are then computed at every frame step and not much more often."""
    for candidate in range(min(100, frame_steps), 0, -1):
        if frame_steps % candidate == 0:
            return candidate
    return 1


def mdp_text(settings: dict) -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, float):
            value = f"{value:.10g}"
        lines.append(f"{key:<24} = {value}")
    return "\n".join(lines) + "\n"


def common_md_settings(protocol: Protocol, seed: int) -> dict:
    return {
        "integrator": "sd",  # Langevin (leap-frog stochastic dynamics), like OpenMM's LangevinMiddle
        "dt": protocol.timestep_ps,
        "tc-grps": "System",
        "tau-t": 1.0 / protocol.friction_per_ps,  # sd's tau-t is the inverse friction
        "ref-t": protocol.temperature_K,
        "ld-seed": seed,
        "comm-mode": "Linear",
        "cutoff-scheme": "Verlet",
        "coulombtype": "PME",
        "rcoulomb": protocol.nonbonded_cutoff_nm,
        "rvdw": protocol.nonbonded_cutoff_nm,
        "DispCorr": "EnerPres",  # OpenMM's NonbondedForce uses a dispersion correction too
        "constraints": "h-bonds",
        "constraint-algorithm": "lincs",
        "nstxout": 0,
        "nstvout": 0,
        "nstfout": 0,
    }


def barostat_settings(protocol: Protocol) -> dict:
    return {
        "pcoupl": "C-rescale",
        "pcoupltype": "isotropic",
        "tau-p": TAU_P_PS,
        "ref-p": protocol.pressure_bar,
        "compressibility": COMPRESSIBILITY_PER_BAR,
    }


def production_mdp(protocol: Protocol, seed: int, trajectory_group: str) -> str:
    frame = protocol.frame_steps
    calc = nstcalcenergy(frame)
    return mdp_text(
        {
            **common_md_settings(protocol, seed),
            "tinit": 0.0,
            "init-step": 0,
            "nsteps": protocol.segment_steps,
            "continuation": True,
            "gen-vel": False,
            **barostat_settings(protocol),
            "nstcalcenergy": calc,
            "nstenergy": frame,
            "nstlog": frame,
            "nstxout-compressed": frame,
            "compressed-x-grps": trajectory_group,
            "compressed-x-precision": 1000,
        }
    )


def with_seeds(mdp: str, seed: int) -> str:
    """An .mdp with ld-seed and gen-seed set to ``seed`` (either spelling, any case)."""
    for key in ("ld-seed", "gen-seed"):
        pattern = re.compile(rf"(?im)^[ \t]*{key.replace('-', '[-_]')}[ \t]*=.*$")
        line = f"{key:<24} = {seed}"
        mdp = pattern.sub(line, mdp) if pattern.search(mdp) else mdp.rstrip("\n") + f"\n{line}\n"
    return mdp
