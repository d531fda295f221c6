"""`mdcampaign sites deploy`: a campaign's folder on every other machine, from the one
where it is edited.

A site with a ``host`` is another machine, reached over SSH (sitehost.SiteMachine),
with nothing installed there beforehand but a Python of 3.11 or newer (after its
``setup`` lines, e.g. ``module load python3/3.11``). Deploy makes or updates its
campaign folder (``path``): the config, the systems table and the files it names, the
`mdcampaign init` layout and the machine profiles (written only where absent: the
site's edits to its profile stay), and exactly the build of mdcampaign running here
(a wheel of it, carried over and compared by a hash of its files, since the version
string does not change between commits) in a virtual environment there, with its
dependencies from that machine's package index or from a folder of wheels. Then it
runs `mdcampaign doctor` there, a line per problem, and records the campaign's
definition in the store (definition.py). Only adds and updates what it writes itself:
that machine's results and logs stay; nothing is ever deleted there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shlex
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import __version__, layout, shipped
from .errors import CampaignError, TransferError
from .sitehost import SiteMachine
from .sites import ASSIGNMENT_FILE, Site

PACKAGE = "mdcampaign"
WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mdcampaign" / "wheels"


# -- the build running here ----------------------------------------------------------------


def _files_hash(files: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


def _package_file(name: str) -> bool:
    return name.startswith(f"{PACKAGE}/") and "__pycache__" not in name and not name.endswith((".pyc", ".pyo"))


def wheel_build_id(wheel: Path) -> str:
    """The build a wheel holds: a hash of its package files (not of its metadata)."""
    with zipfile.ZipFile(wheel) as archive:
        return _files_hash([(n, archive.read(n)) for n in archive.namelist() if _package_file(n)])


def installed_build_id() -> str | None:
    """The build installed in this environment, from its record of installed files
    (None for an editable install, whose files are a checkout's)."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in distribution.files or () if _package_file(str(f))]
    if not files:
        return None
    return _files_hash([(str(f), Path(distribution.locate_file(f)).read_bytes()) for f in files])


def _checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), if any."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "src" / PACKAGE).is_dir() else None


def build_wheel(cache: Path = WHEEL_CACHE) -> Path:
    """A wheel of exactly the build running here: built from the checkout (an editable
    install), or put together from the installed files (a wheel install); cached by
    the build's hash."""
    checkout = _checkout()
    if checkout is None:
        return _rebuilt_wheel(cache)
    sources = []
    for path in sorted((checkout / "src" / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and "egg-info" not in str(path):
            sources.append((str(path.relative_to(checkout)), path.read_bytes()))
    sources.append(("pyproject.toml", (checkout / "pyproject.toml").read_bytes()))
    folder = cache / f"source-{_files_hash(sources)}"
    found = sorted(folder.glob(f"{PACKAGE}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(checkout)],
        capture_output=True,
        text=True,
    )
    found = sorted(folder.glob(f"{PACKAGE}-*.whl"))
    if result.returncode != 0 or not found:
        raise CampaignError(f"could not build a wheel of {checkout}: {' '.join(result.stderr.split())[-300:]}")
    return found[0]


def _rebuilt_wheel(cache: Path) -> Path:
    """A wheel of the installed package, from its record of installed files."""
    distribution = importlib.metadata.distribution(PACKAGE)
    build = installed_build_id()
    folder = cache / f"installed-{build}"
    wheel = folder / f"{PACKAGE}-{__version__}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in distribution.files or ():
            text = str(name)
            if text.startswith("..") or "__pycache__" in text or text.endswith((".pyc", "INSTALLER", "REQUESTED")):
                continue
            if text.endswith("direct_url.json"):
                continue
            archive.write(distribution.locate_file(name), text)
    os.replace(partial, wheel)
    return wheel


# -- deploy ----------------------------------------------------------------------------------


def this_build() -> str:
    """The build running here: of its installed files, or of the wheel made of its checkout."""
    return installed_build_id() or wheel_build_id(build_wheel())


def campaign_files(campaign, directory: Path) -> dict[str, Path]:
    """What a site's campaign folder needs of this one: the config, the systems table,
    every file the table names, the frozen site plan. Names as in the campaign folder."""
    directory = Path(directory).resolve()
    names = {campaign.config_file, campaign.systems_file, ASSIGNMENT_FILE}
    for system in campaign.systems.values():
        for path in system.input_files:
            path = Path(path)
            if path.is_absolute():
                try:
                    path = path.resolve().relative_to(directory)
                except ValueError:
                    raise CampaignError(
                        f"{campaign.systems_file}, line {system.line} (id '{system.id}'): {path} is outside the "
                        "campaign folder, so `sites deploy` cannot carry it to the other machines: move it into "
                        "the campaign folder and name it relative to it"
                    ) from None
            names.add(str(path))
    return {name: directory / name for name in sorted(names) if (directory / name).is_file()}


def layout_files(directory: Path) -> dict[str, Path]:
    """The `mdcampaign init` layout a site's folder needs besides the campaign: its
    default workflow profile and the machine profiles (this campaign's own where it
    has them, else as shipped). Written only where the site has none: its edits to
    its profile (its allocation) stay."""
    files = {}
    sources = [(shipped.PROFILES, "profiles"), (Path(directory) / "profiles", "profiles")]
    sources.append((shipped.WORKFLOW / "profiles" / "default", "workflow/profiles/default"))
    for source, prefix in sources:
        for path in sorted(Path(source).rglob("*")) if Path(source).is_dir() else ():
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{prefix}/{path.relative_to(source)}"] = path
    return files


def snakefile() -> dict[str, Path]:
    """The Snakefile that runs the installed workflow: the build's, on every deploy
    (it is generated, never a site's own, and an older one may lack the handlers)."""
    from .folders import SNAKEFILE, SNAKEFILE_TEXT

    path = WHEEL_CACHE.parent / "Snakefile"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = SNAKEFILE_TEXT.replace("{version}", __version__)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return {SNAKEFILE: path}


def deploy(campaign, names: list[str], directory: Path, settings, wheels: Path | None = None, say=print) -> int:
    """Deploy the campaign to the sites named (default: every site with a host): a
    line per site and per problem. Returns how many sites failed."""
    from .definition import campaign_definition, write_definition
    from .store import open_store

    directory = Path(directory)
    sites = chosen_sites(campaign, names, need_host=True)
    extra = {}
    if wheels is not None:
        found = sorted(Path(wheels).glob("*.whl")) if Path(wheels).is_dir() else []
        if not found:
            raise CampaignError(f"--wheels {wheels}: not a folder of wheels (*.whl)")
        # the build's own wheel is the one made here, whatever the folder holds
        extra = {f"{layout.SITE_WHEELS}/{path.name}": path for path in found if not path.name.startswith(f"{PACKAGE}-")}
    try:  # first: what every site checks itself against when it starts
        write_definition(open_store(campaign.store, settings), campaign_definition(campaign))
    except TransferError as error:
        raise CampaignError(f"the campaign's definition could not be recorded in the store: {error}") from None
    if not sites:
        say("the campaign's definition is recorded in the store; no site has a host (`host:`) to deploy to")
        return 0
    wheel = build_wheel()
    build = wheel_build_id(wheel)
    files = {
        **campaign_files(campaign, directory),
        **extra,
        **snakefile(),
        f"{layout.SITE_WHEELS}/{wheel.name}": wheel,
    }
    defaults = layout_files(directory)

    def one(site: Site) -> bool:
        try:
            _deploy_site(site, SiteMachine(site, settings), files, defaults, wheel.name, build, bool(extra), say)
            return True
        except CampaignError as error:
            say(f"FAILED: {error}")
            return False

    # every site at once: most of the time is each machine installing
    with ThreadPoolExecutor(max_workers=min(8, len(sites))) as pool:
        failed = sum(1 for ok in pool.map(one, sites) if not ok)
    return failed


def _deploy_site(site: Site, machine: SiteMachine, files, defaults, wheel: str, build: str, offline: bool, say) -> None:
    facts = machine.probe()
    folder = facts["folder"]
    changed = machine.send(files, folder) + machine.send(defaults, folder, keep_existing=True)
    installed = facts.get("build") != build
    if installed:
        was = f"build {facts['build']}" if facts.get("build") else "nothing"
        say(f"site {site.name}: installing mdcampaign build {build} (was {was}) with {facts.get('python')}")
        machine.run(_install_script(site, wheel, offline), "installing mdcampaign")
    profile = ["--profile", f"profiles/{site.profile_name}"] if site.profile_name else []
    doctor = machine.mdcampaign("doctor", *profile, "--site", site.name, check=False)
    problems = [line.strip() for line in doctor.stdout.splitlines() if line.startswith(("FAIL", "WARN"))]
    if doctor.returncode not in (0, 1) and not problems:
        problems = [f"FAIL doctor did not run: {machine.explain(doctor, 'doctor')}"]
    for line in problems:
        say(f"site {site.name}: doctor: {line}")
    where = f"{site.host}:{folder}"
    if installed or changed:
        say(f"site {site.name}: deployed to {where} (build {build}, {changed} files written)")
    else:
        say(f"site {site.name}: up to date at {where} (build {build}; nothing changed)")


def _install_script(site: Site, wheel: str, offline: bool) -> str:
    """The site's virtual environment with the build's wheel, its dependencies from
    the carried wheels (``offline``) or that machine's package index; then the build
    it holds, recorded for the next deploy to compare."""
    venv, python = layout.SITE_VENV, f"{layout.SITE_VENV}/bin/python"
    pip = f"{python} -m pip install -q --disable-pip-version-check --no-compile"
    index = f"--no-index --find-links {layout.SITE_WHEELS}" if offline else ""
    wheel = shlex.quote(f"{layout.SITE_WHEELS}/{wheel}")
    return (
        f"[ -x {python} ] || {shlex.quote(site.python)} -m venv {venv} >&2 || exit 1\n"
        f"{pip} {index} {wheel} >&2 || exit 1\n"
        # the same version number with other files: pip would keep the old ones
        f"{pip} --force-reinstall --no-deps {wheel} >&2 || exit 1\n"
        f"{python} -m mdcampaign.deploy build-id > {layout.SITE_BUILD}.partial && "
        f"mv {layout.SITE_BUILD}.partial {layout.SITE_BUILD}"
    )


def chosen_sites(campaign, names: list[str], need_host: bool = False, here: str | None = None) -> list[Site]:
    """The sites named (default: every site this folder reaches), each once. A site
    with a host is reached over SSH; a site without one only where it is this folder's
    own ``site`` (``here``; ``need_host``: never). CampaignError for a site the
    campaign does not have, or one that cannot be reached from here."""
    if not campaign.sites:
        raise CampaignError(f"{campaign.config_file}: the campaign has no sites (add them under `sites:`)")
    unknown = [name for name in names if name not in campaign.sites]
    if unknown:
        raise CampaignError(f"no site '{unknown[0]}' in {campaign.config_file} (sites: {', '.join(campaign.sites)})")
    sites = [campaign.sites[name] for name in dict.fromkeys(names)] if names else list(campaign.sites.values())
    reached = [site for site in sites if site.host or (site.name == here and not need_host)]
    if names and len(reached) < len(sites):
        other = next(site.name for site in sites if site not in reached)
        if need_host:
            raise CampaignError(f"site {other} has no host (`host:`): there is nothing to deploy it to")
        raise CampaignError(
            f"site {other} has no host and is not this folder's site (`site:`): start it from its own "
            "campaign folder, or give it a `host:`"
        )
    return reached


def main(argv=None) -> int:
    """python -m mdcampaign.deploy build-id: the build installed here (deploy compares it)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-id"]:
        print(this_build())
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
