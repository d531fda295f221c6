"""A lab's own GROMACS inputs, run as given: a ``.tpr``, or a ``.gro`` + ``.top`` +
``.mdp`` (grompp'd here); and each replica's own tpr, with its own random seeds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ...errors import CampaignError
from ...files import atomic_write_json
from ...protocol import Protocol
from .gmx import available, check_tpr_matches, failure_message, inspect_tpr, run_gmx, write_index
from .mdp import with_seeds

# A lab's own .gro + .top + .mdp, recorded by import_inputs for replica_tpr.
OWN_INPUTS = "own_inputs.json"


OWN_MDP = "own_inputs.mdp"


def replica_tpr(setup_dir: Path, seed: int, out_tpr: Path) -> Path:
    """``system.tpr`` with another Langevin seed (``ld-seed``), for a replica: replicas
    share the equilibrated state and differ by their random forces (GROMACS cannot
    change the seed of an existing tpr, so this runs grompp again). For a lab's own
    .gro + .top + .mdp, their grompp again with ``ld-seed`` and ``gen-seed`` set (the
    random forces of sd/bd/v-rescale/C-rescale, and velocities where gen-vel = yes)."""
    setup_dir = Path(setup_dir).absolute()
    out_tpr = Path(out_tpr).absolute()
    if (setup_dir / OWN_INPUTS).exists():
        source = json.loads((setup_dir / OWN_INPUTS).read_text())
        seeded = out_tpr.with_name(out_tpr.stem + ".mdp")
        seeded.write_text(with_seeds((setup_dir / OWN_MDP).read_text(), seed))
        options = [
            ("-f", seeded),
            ("-c", Path(source["gro"])),
            ("-p", Path(source["top"])),
            ("-o", out_tpr),
            ("-po", out_tpr.with_name(out_tpr.stem + ".out.mdp")),
            ("-maxwarn", 0),
        ]
        if "ndx" in source:
            options.append(("-n", Path(source["ndx"])))
        run_gmx(
            "grompp",
            options,
            cwd=Path(source["top"]).parent,
            subject=_grompp_subject(source),
            error=CampaignError,
            log_file=setup_dir / "gromacs.log",
        )
        for leftover in (seeded, out_tpr.with_name(out_tpr.stem + ".out.mdp")):
            leftover.unlink(missing_ok=True)
        return out_tpr
    grompp_production(setup_dir, out_tpr, seed, setup_dir / "build" / "gromacs.log", setup_dir / "production.mdp")
    return out_tpr


def can_reseed(setup_dir: Path) -> bool:
    """Whether :func:`replica_tpr` can give this setup's replicas their own seeds (not
    for a lab's .tpr, which runs as given)."""
    return (Path(setup_dir) / "production.mdp").exists() or (Path(setup_dir) / OWN_INPUTS).exists()


def grompp_production(setup: Path, tpr: Path, seed: int, gmx_log: Path, subject) -> None:
    mdp = (setup / "production.mdp").read_text()
    mdp = re.sub(r"(?m)^ld-seed\s*=.*$", f"{'ld-seed':<24} = {seed}", mdp)
    seeded = tpr.with_name(tpr.stem + ".mdp")
    seeded.write_text(mdp)
    run_gmx(
        "grompp",
        [
            ("-f", seeded),
            ("-c", setup / "start.gro"),
            ("-t", setup / "start.cpt"),
            ("-p", setup / "system.top"),
            ("-n", setup / "index.ndx"),
            ("-o", tpr),
            ("-po", tpr.with_name(tpr.stem + ".out.mdp")),
            ("-maxwarn", 0),
        ],
        cwd=setup,
        subject=subject,
        log_file=gmx_log,
    )
    tpr.with_name(tpr.stem + ".out.mdp").unlink(missing_ok=True)
    if seeded.name != "production.mdp":
        seeded.unlink(missing_ok=True)


def import_inputs(
    tpr: Path | None = None,
    gro: Path | None = None,
    top: Path | None = None,
    mdp: Path | None = None,
    *,
    out_dir: Path,
    ndx: Path | None = None,
    protocol: Protocol | None = None,
) -> dict:
    """A lab's own GROMACS inputs as ``out_dir/system.tpr``: a ``.tpr`` used as given, or
    ``.gro`` + ``.top`` + ``.mdp`` (and an optional index ``ndx``) through grompp. A bad
    file fails in one line naming it (grompp's error line). Also writes
    ``topology.pdb`` and ``trajectory_topology.pdb`` and returns the run parameters
    (timestep, frame interval...). With a ``protocol``, the inputs must match its
    timestep and frame interval (one line naming the file and the keys to set).
    ``.gro`` + ``.top`` + ``.mdp`` are recorded (``own_inputs.json``, and a copy of the
    .mdp) so that :func:`replica_tpr` can make each replica's tpr with its own seeds."""
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    gmx_log = out / "gromacs.log"
    if tpr is not None:
        if any(x is not None for x in (gro, top, mdp, ndx)):
            raise CampaignError("give either a .tpr or .gro + .top + .mdp, not both")
        tpr = Path(tpr).absolute()
        if not tpr.is_file():
            raise CampaignError(f"GROMACS input '{tpr}' does not exist")
        shutil.copy2(tpr, out / "system.tpr")
        source = {"tpr": str(tpr)}
    else:
        missing = [label for label, value in (("gro", gro), ("top", top), ("mdp", mdp)) if value is None]
        if missing:
            raise CampaignError(f"GROMACS inputs: {', '.join(missing)} missing (give a .tpr, or .gro + .top + .mdp)")
        files = {"gro": Path(gro).absolute(), "top": Path(top).absolute(), "mdp": Path(mdp).absolute()}
        if ndx is not None:
            files["ndx"] = Path(ndx).absolute()
        for label, path in files.items():
            if not path.is_file():
                raise CampaignError(f"GROMACS input '{path}' ({label}) does not exist")
        options = [
            ("-f", files["mdp"]),
            ("-c", files["gro"]),
            ("-p", files["top"]),
            ("-o", out / "system.tpr"),
            ("-po", out / "mdout.mdp"),
            ("-maxwarn", 0),
        ]
        if "ndx" in files:
            options.append(("-n", files["ndx"]))
        # grompp runs next to the topology, so its relative #includes resolve as the lab's do.
        output = run_gmx(
            "grompp",
            options,
            cwd=files["top"].parent,
            subject=_grompp_subject(files),
            error=CampaignError,
            log_file=gmx_log,
        )
        if re.search(r"(?m)^ERROR \d+", output):  # pragma: no cover - grompp exits non-zero then
            raise CampaignError(failure_message("grompp", files["mdp"], output, gmx_log))
        source = {k: str(v) for k, v in files.items()}
        shutil.copyfile(files["mdp"], out / OWN_MDP)
        atomic_write_json(out / OWN_INPUTS, source)
    parameters = inspect_tpr(out / "system.tpr", cwd=out)
    if protocol is not None:
        check_tpr_matches(
            parameters, protocol, Path(source.get("tpr") or source["mdp"]), "its inputs", error=CampaignError
        )
    if parameters["integrator"] not in ("md", "sd", "bd", "md-vv", "md-vv-avek"):
        raise CampaignError(f"GROMACS input {source}: integrator '{parameters['integrator']}' is not dynamics")
    if parameters["nstxout_compressed"] <= 0:
        raise CampaignError(
            f"GROMACS input {source}: nstxout-compressed is 0, so mdrun would write no XTC "
            "trajectory; set it to the frame interval in steps"
        )
    if parameters["nstenergy"] <= 0 or parameters["nstxout_compressed"] % parameters["nstenergy"]:
        raise CampaignError(
            f"GROMACS input {source}: nstenergy ({parameters['nstenergy']}) must divide "
            f"nstxout-compressed ({parameters['nstxout_compressed']}) so that every frame has "
            "an energy row"
        )
    run_gmx("editconf", [("-f", out / "system.tpr"), ("-o", out / "topology.pdb")], cwd=out, log_file=gmx_log)
    # The atoms mdrun writes to the XTC (compressed-x-grps), for reading the trajectory.
    subset = parameters["xtc_atoms"]
    if subset is None:
        shutil.copy2(out / "topology.pdb", out / "trajectory_topology.pdb")
    else:
        write_index(out / "trajectory.ndx", {"Trajectory": subset})
        run_gmx(
            "trjconv",
            [
                ("-s", out / "system.tpr"),
                ("-f", out / "topology.pdb"),
                ("-n", out / "trajectory.ndx"),
                ("-o", out / "trajectory_topology.pdb"),
            ],
            cwd=out,
            stdin="Trajectory\n",
            log_file=gmx_log,
        )
    parameters = {k: v for k, v in parameters.items() if k != "xtc_atoms"}
    return {
        "engine": "gromacs",
        "source": source,
        "gmx_version": available(),
        **parameters,
        "trajectory_atoms": len(subset) if subset is not None else parameters["atoms"],
        "timestep_fs": round(parameters["dt_ps"] * 1000.0, 6),
        "frame_interval_ps": round(parameters["nstxout_compressed"] * parameters["dt_ps"], 6),
    }


def _grompp_subject(files: dict) -> str:
    return f"{files['mdp']} / {files['top']} / {files['gro']}"
