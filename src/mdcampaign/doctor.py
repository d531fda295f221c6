"""`mdcampaign doctor`: is this machine set up right for this campaign and profile?

Each check prints PASS, WARN or FAIL with what to do. Nothing is changed, nothing is
submitted; the store and scratch are only asked whether they can be written (a
probe file, removed at once; a remote store's folder is created as `stage` would).
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import slurm
from .shipped import PROFILES
from .validation import safe_load_yaml

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
REQUIREMENTS = {  # package: (minimum major.minor, below this major)
    "snakemake": ((9, 0), 10),
    "openmm": ((8, 1), 9),
    "mdtraj": ((1, 10), 2),
    "pandas": ((2, 0), 4),
    "pdbfixer": ((1, 9), None),
}


@dataclass
class Check:
    status: str
    what: str
    fix: str = ""

    def line(self, colour: bool = False) -> str:
        codes = {PASS: "32", WARN: "33", FAIL: "31;1"}
        label = f"\033[{codes[self.status]}m{self.status}\033[0m" if colour else self.status
        return f"{label}  {self.what}" + (f"\n      fix: {self.fix}" if self.fix else "")


def find_profile(name: str, directory: Path) -> Path | None:
    """A profile given as a path, or by name under profiles/ (the campaign's, then the
    ones shipped with the package)."""
    candidates = [
        Path(name),
        directory / name,
        directory / "profiles" / name,
        PROFILES / name,
    ]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    return None


def read_profile(path: Path) -> dict:
    return safe_load_yaml(path.read_text()) or {}


def profile_config(profile: dict) -> dict:
    """The `config:` entries of a profile, as Snakemake would apply them."""
    entries = profile.get("config") or {}
    if isinstance(entries, list):
        entries = dict(entry.split("=", 1) for entry in entries)
    parsed = {}
    for key, value in entries.items():
        parsed[key] = safe_load_yaml(value) if isinstance(value, str) else value
    return parsed


def _version(package: str) -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def check_software(profile: dict) -> list[Check]:
    checks = []
    checks.append(Check(PASS, f"Python {sys.version.split()[0]}"))  # pip refuses older ones (requires-python)
    wanted = dict(REQUIREMENTS)
    if profile.get("executor") == "slurm":
        wanted["snakemake-executor-plugin-slurm"] = ((1, 0), 3)
    for package, (minimum, below) in wanted.items():
        version = _version(package)
        if version is None:
            checks.append(Check(FAIL, f"{package} is not installed", 'pip install -e ".[test]" in the repository'))
        elif version < minimum or (below is not None and version[0] >= below):
            allowed = f">= {'.'.join(map(str, minimum))}" + (f", < {below}" if below else "")
            checks.append(
                Check(
                    FAIL,
                    f"{package} {'.'.join(map(str, version))} (need {allowed})",
                    f"pip install '{package}{allowed.replace(' ', '')}'",
                )
            )
        else:
            checks.append(Check(PASS, f"{package} {'.'.join(map(str, version))}"))
    return checks


def check_engines(campaign, simulations=None) -> list[Check]:
    """Every MD engine this site's simulations (or ``simulations``) use is installed and runs."""
    from .engines import engine_for

    users: dict[str, int] = {}
    for simulation in campaign.share if simulations is None else simulations:
        users[simulation.protocol.engine] = users.get(simulation.protocol.engine, 0) + 1
    checks = []
    for name, count in sorted(users.items()):
        engine = engine_for(name)
        problem = engine.problem()
        version = None if problem else engine.version()
        if problem or version is None:
            checks.append(
                Check(
                    FAIL,
                    f"engine {name} (used by {count} simulations here) cannot run: "
                    + (problem or "it is not installed"),
                    engine.install_hint,
                )
            )
        else:
            checks.append(Check(PASS, f"engine {name} {version} ({count} simulations here)"))
    return checks


def check_ligand_tools(campaign, simulations=None) -> list[Check]:
    """The ligand toolchain, where this site's systems (or those of ``simulations``) have ligands."""
    from .extras import LIGANDS

    chosen = campaign.share if simulations is None else simulations
    with_ligand = {s.system for s in chosen if campaign.systems[s.system].ligands}
    if not with_ligand:
        return []
    missing = LIGANDS.missing()
    if missing:
        return [
            Check(
                FAIL,
                f"{len(with_ligand)} systems have ligands, but {', '.join(missing)} are not installed",
                LIGANDS.install_hint,
            )
        ]
    return [Check(PASS, f"ligand tools (AmberTools, RDKit, ParmEd) for {len(with_ligand)} systems")]


def check_engine_machines(campaign, config: dict, profile: dict) -> list[Check]:
    """What each engine this site's simulations use checks of this machine (OpenMM: the
    platforms usable here against what the profile asks for)."""
    from .engines import engine_for

    checks = []
    for name in sorted({simulation.protocol.engine for simulation in campaign.share}):
        checks += [Check(*check) for check in engine_for(name).machine_checks(config, profile)]
    return checks


def _partitions_of(profile: dict) -> set[str]:
    names = set()
    for resources in [profile.get("default-resources") or {}, *(profile.get("set-resources") or {}).values()]:
        if isinstance(resources, dict) and resources.get("slurm_partition"):
            names.add(str(resources["slurm_partition"]))
    return names


def check_slurm(profile: dict, config: dict, profile_path: Path) -> list[Check]:
    if profile.get("executor") != "slurm":
        return []
    checks = []
    missing = [tool for tool in ("sbatch", "sinfo", "squeue") if not shutil.which(tool)]
    if missing:
        return [
            Check(
                FAIL,
                f"Slurm commands not found: {', '.join(missing)}",
                "run on the cluster's login node (or load its Slurm module)",
            )
        ]
    available, said = slurm.partitions()
    if available is None:
        return [
            Check(
                FAIL,
                f"sinfo cannot reach the Slurm controller: {said}",
                "check that Slurm is up and this host is a submit host",
            )
        ]
    checks.append(Check(PASS, f"Slurm reachable; partitions: {', '.join(sorted(available))}"))
    for partition in sorted(_partitions_of(profile)):
        if partition in available:
            checks.append(Check(PASS, f"partition '{partition}' exists"))
        else:
            checks.append(
                Check(
                    FAIL,
                    f"partition '{partition}' named in {profile_path} does not exist here",
                    f"set slurm_partition in {profile_path} to one of: {', '.join(sorted(available))}",
                )
            )
    from .guards import account_problem

    problem = account_problem(config)
    if problem:
        checks.append(Check(FAIL, "Slurm account not filled in", problem))
    elif config.get("slurm_account"):
        mine = slurm.accounts(_user())
        if mine:
            account = str(config["slurm_account"])
            checks.append(
                Check(PASS, f"Slurm account '{account}' is yours")
                if account.lower() in {a.lower() for a in mine}
                else Check(
                    FAIL,
                    f"Slurm account '{account}' is not among yours ({', '.join(sorted(mine))})",
                    f"put one of them on the slurm_account line of {profile_path}",
                )
            )
        else:
            checks.append(
                Check(
                    WARN,
                    "could not list your Slurm accounts (sacctmgr unavailable)",
                    "check the account with your site's tools",
                )
            )
    return checks


def check_slurm_start_up_probe(profile: dict) -> list[Check]:
    """On a machine that has Slurm's client but no reachable controller, the Slurm
    executor plugin's `scontrol show config` (10 s timeout, asked while Snakemake loads
    its plugins, whatever the executor) makes every `snakemake` start 10 s slower."""
    if profile.get("executor") == "slurm" or not shutil.which("scontrol") or not shutil.which("sinfo"):
        return []
    if slurm.config_answers_within(2):  # an answer, or a quick refusal: either costs nothing
        return []
    return [
        Check(
            WARN,
            "Slurm's client is installed here but no Slurm controller answers: every `snakemake` start "
            "waits up to 10 s for the Slurm executor plugin's `scontrol show config`",
            "export SLURM_CONF=/dev/null in this shell when this machine does not use Slurm",
        )
    ]


def _user() -> str:
    import getpass

    return getpass.getuser()


def _folder_problem(path: Path) -> tuple[str, str] | None:
    """(what is wrong, the fix) if ``path`` cannot be used as a folder to write in: it is
    a file, it is not writable, or it does not exist and cannot be created. Asks the
    file system by trying (a probe file or folder, removed at once), so that root,
    ACLs and read-only mounts answer truly."""
    path = path.absolute()
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    if not existing.is_dir():
        if existing == path:
            return f"{path} is a file, not a folder", "point it at a folder, or move the file away"
        return (
            f"{path} cannot be created: {existing} is a file",
            f"point it at a folder outside {existing}, or move that file away",
        )
    try:
        if existing == path:
            handle, probe = tempfile.mkstemp(prefix=".mdcampaign-doctor-", dir=path)
            os.close(handle)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".mdcampaign-doctor-", dir=existing))
    except OSError as error:
        reason = error.strerror or str(error)
        if existing == path:
            return (
                f"{path} is not writable ({reason})",
                f"make it writable by your user (chmod u+w {_quote(str(path))}, or ask its owner), "
                "or point it elsewhere",
            )
        return (
            f"{path} cannot be created: {existing} is not writable ({reason})",
            f"create it as a user who may (mkdir -p {_quote(str(path))}; then chown it to you), or point it elsewhere",
        )
    return None


def check_store(campaign, directory: Path | str = ".") -> list[Check]:
    """The campaign's store (``campaign.store``: ``~`` and ``$VARS`` already expanded;
    a relative local path is relative to ``directory``). A remote store is reached with
    ssh only after `store.check_location` accepts it."""
    from .locations import check_location, split_remote
    from .store import remote_root

    store = campaign.store
    where = f"`store` in {getattr(campaign, 'config_file', None) or 'the config file'}"
    directory = Path(directory)
    problem = check_location(store, directory)
    if problem:
        return [Check(FAIL, f"store '{store}' {problem}", f"change {where}: a folder here, or [user@]host:/path")]
    parts = split_remote(store, directory)
    if parts is not None:
        host, path = parts
        path = remote_root(path)
        quoted = _quote(path)
        script = (
            f"mkdir -p -- {quoted} || exit 3; test -d {quoted} || {{ echo 'not a folder' >&2; exit 3; }}; "
            f"test -w {quoted} || {{ echo 'not writable by' \"$(id -un)\" >&2; exit 3; }}; "
            f"df -Pk -- {quoted} | tail -1"
        )
        try:
            result = subprocess.run(
                ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "--", host, script],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return [
                Check(
                    FAIL,
                    f"store {store}: ssh {host} did not answer within 120 s",
                    f"check that `ssh {host} true` works without a password prompt",
                )
            ]
        said = " ".join(result.stderr.split())[:200] or f"no message from ssh (exit {result.returncode})"
        if result.returncode == 255:
            return [
                Check(
                    FAIL,
                    f"store {store} is not reachable: {said}",
                    f"check that `ssh {host} true` works without a password prompt",
                )
            ]
        if result.returncode != 0:
            return [
                Check(
                    FAIL,
                    f"store {store} is not writable: {said}",
                    f"check that {path} can be created and written by your user on {host}, or change {where}",
                )
            ]
        fields = result.stdout.split()
        free_kb = int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else 0
        return [Check(PASS, f"store {store} reachable and writable ({free_kb / 1e6:.1f} GB free)")]
    path = Path(store) if Path(store).is_absolute() else directory / store
    trouble = _folder_problem(path)
    if trouble:
        what, fix = trouble
        return [Check(FAIL, f"store {what}", f"{fix} ({where})")]
    existing = next(p for p in [path.absolute(), *path.absolute().parents] if p.exists())
    return [Check(PASS, f"store {store} is writable ({shutil.disk_usage(existing).free / 1e9:.1f} GB free)")]


def _quote(text: str) -> str:
    return shlex.quote(text)


def expected_bytes(campaign) -> tuple[float, float]:
    """(bytes the store will hold at the end, bytes scratch needs per running segment)."""
    store_total = 0.0
    per_segment = 0.0
    for simulation in campaign.simulations:
        system = campaign.systems[simulation.system]
        atoms = system.estimated_atoms
        saved = atoms if system.protocol.trajectory_atoms == "all" else 2.0 * system.heavy_atoms
        frames = simulation.protocol.segment_steps // simulation.protocol.frame_steps
        # XTC: about 4 bytes per atom per frame; state XML: about 200 bytes per atom;
        # system XML about 500; two checkpoints about 100 each
        segment_bytes = frames * saved * 4 + atoms * 200
        store_total += simulation.n_segments * segment_bytes + atoms * 500
        per_segment = max(per_segment, segment_bytes + atoms * (500 + 200 + 2 * 100))
    return store_total, per_segment


def check_space(campaign, directory: Path, profile: dict) -> list[Check]:
    """Scratch (this site's, `campaign.scratch_here`, ``~`` and ``$VARS`` expanded) can be
    written and has room for the segments running at once."""
    store_total, per_segment = expected_bytes(campaign)
    scratch = Path(campaign.scratch_here)
    scratch = scratch if scratch.is_absolute() else directory / scratch
    site = campaign.sites.get(campaign.site) if getattr(campaign, "site", None) else None
    which = "scratch" if not (site and site.scratch) else f"scratch of site {campaign.site}"
    key = "`scratch`" if not (site and site.scratch) else f"`sites: {campaign.site}: scratch`"
    key += f" in {getattr(campaign, 'config_file', None) or 'the config file'}"
    trouble = _folder_problem(scratch)
    if trouble:
        what, fix = trouble
        return [
            Check(FAIL, f"{which} {what}", f"{fix} ({key})"),
            Check(PASS, f"the finished campaign will hold about {store_total / 1e9:.2f} GB in the store"),
        ]
    existing = next((p for p in [scratch.absolute(), *scratch.absolute().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    limit = profile.get("jobs") or profile.get("cores")
    parallel = limit if isinstance(limit, int) else 4  # "all" or unset: a few at a time
    need = per_segment * min(parallel, len(campaign.share) or 1)
    checks = []
    if free >= need:
        checks.append(
            Check(PASS, f"{which} {scratch}: {free / 1e9:.1f} GB free, running segments need about {need / 1e9:.2f} GB")
        )
    else:
        checks.append(
            Check(
                FAIL,
                f"{which} {scratch}: {free / 1e9:.2f} GB free, running segments need about {need / 1e9:.2f} GB",
                f"free space there or point {key} elsewhere",
            )
        )
    checks.append(Check(PASS, f"the finished campaign will hold about {store_total / 1e9:.2f} GB in the store"))
    return checks


def run_checks(directory: Path, config_file: str, profile_name: str | None, site: str | None = None) -> list[Check]:
    from .campaign import load_campaign
    from .configuration import read_config_file
    from .errors import CampaignError

    checks: list[Check] = []
    profile, profile_path = {}, None
    if profile_name:
        profile_path = find_profile(profile_name, directory)
        if profile_path is None:
            return [
                Check(
                    FAIL,
                    f"profile '{profile_name}' not found",
                    "give a path (profiles/NAME) or one of the names in profiles/",
                )
            ]
        profile = read_profile(profile_path)
        checks.append(Check(PASS, f"profile {profile_path.parent} ({profile.get('executor', 'local')} executor)"))
    checks += check_software(profile)
    try:
        config = read_config_file(directory / config_file)
        config.update(profile_config(profile))
        if site:  # the campaign as that site runs it
            config["site"] = site
        campaign = load_campaign(config, config_file, base_dir=directory)
        checks.append(Check(PASS, f"{config_file} is valid: {len(campaign.simulations)} simulations"))
    except CampaignError as error:
        checks.append(Check(FAIL, f"the campaign definition is invalid: {error}", "fix the file and line named"))
        return checks
    mine = campaign.share if site else None
    checks += check_engines(campaign, mine)
    checks += check_ligand_tools(campaign, mine)
    checks += check_engine_machines(campaign, config, profile)
    checks += check_slurm(profile, config, profile_path) if profile_path else []
    checks += check_slurm_start_up_probe(profile)
    checks += check_store(campaign, directory)
    checks += check_space(campaign, directory, profile)
    return checks
