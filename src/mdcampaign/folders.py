"""Campaigns in their own folders: `mdcampaign init DIR` writes one that runs the
installed workflow, and `mdcampaign profile install` puts the machine profiles where
`snakemake --profile NAME` finds them by name. Neither ever overwrites a file that
exists (a campaign's config, a profile with your allocation in it)."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from . import __version__, layout, shipped
from .errors import CampaignError

# Snakemake finds workflow/Snakefile in the folder it runs in, and applies
# workflow/profiles/default/ next to it.
SNAKEFILE = "workflow/Snakefile"
SNAKEFILE_TEXT = """\
# This campaign runs the mdcampaign workflow installed with the package (written by
# `mdcampaign init`, mdcampaign {version}). Its settings are in config/; run it with
#   snakemake --profile profiles/local        (or profiles/<machine>)
# Upgrading: pip install -U mdcampaign; a started campaign refuses a major upgrade.
from mdcampaign.shipped import SNAKEFILE


configfile: "config/config.yaml"


module mdcampaign:
    snakefile:
        str(SNAKEFILE)
    config:
        config


use rule * from mdcampaign


# A module's handlers run only when the main Snakefile calls them: the check of the
# allocation, the heartbeat of a site's driver, the patience through a controller outage.
onstart:
    mdcampaign.onstart()


onsuccess:
    mdcampaign.onsuccess()


onerror:
    mdcampaign.onerror()
"""
GITIGNORE = "".join(f"/{name}/\n" for name in (layout.RESULTS, "scratch", layout.LOGS, ".snakemake"))


def init_campaign(directory: Path) -> list[Path]:
    """Write a new campaign folder: config/ (the example campaign, to edit), profiles/,
    the Snakefile that uses the installed workflow, its default workflow profile and
    a .gitignore. Refuses a folder that already holds a campaign. The files written."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CampaignError(
            f"{directory} is a file, not a folder: name a new folder (or an empty one) for the campaign"
        )
    try:
        return _write_campaign(directory)
    except OSError as error:
        raise CampaignError(
            f"{directory}: the campaign could not be written there: {error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "")
        ) from None


def _write_campaign(directory: Path) -> list[Path]:
    if (directory / "config" / "config.yaml").exists() or (directory / SNAKEFILE).exists():
        raise CampaignError(
            f"{directory} already holds a campaign (config/config.yaml or {SNAKEFILE}); nothing was changed"
        )
    written = []
    for source, target in (
        (shipped.EXAMPLE, directory / "config"),
        (shipped.PROFILES, directory / "profiles"),
        (shipped.WORKFLOW / "profiles" / "default", directory / "workflow" / "profiles" / "default"),
    ):
        written += _copy_tree(source, target)
    snakefile = directory / SNAKEFILE
    snakefile.write_text(SNAKEFILE_TEXT.replace("{version}", __version__))
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE)
        written.append(gitignore)
    return [*written, snakefile]


def _copy_tree(source: Path, target: Path) -> list[Path]:
    """Copy the files of ``source`` (following links) that ``target`` does not have yet."""
    written = []
    for root, _, files in os.walk(source, followlinks=True):
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            origin = Path(root) / name
            destination = target / origin.relative_to(source)
            if destination.exists():
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, destination)
            written.append(destination)
    return written


def profile_names(source: Path | None = None) -> list[str]:
    """The profiles in ``source`` (default: the shipped ones)."""
    return sorted(p.name for p in Path(source or shipped.PROFILES).iterdir() if (p / "config.yaml").is_file())


def user_profile_dir() -> Path:
    """Where Snakemake looks for a profile given by name (after the current folder)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "snakemake"


def install_profiles(names: list[str], source: Path | None = None, target: Path | None = None) -> list[str]:
    """Copy machine profiles (a campaign's profiles/, else the shipped ones) to
    ``target`` (Snakemake's per-user profile folder), so that `snakemake --profile
    NAME` finds them from any campaign folder. An existing profile that differs is
    left alone (it may hold your allocation): one line says so. What was done, per name."""
    source = Path(source) if source else shipped.PROFILES
    target = Path(target) if target else user_profile_dir()
    available = profile_names(source)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise CampaignError(f"no profile '{unknown[0]}' in {source} (profiles: {', '.join(available)})")
    try:
        return _install_profiles(names or available, source, target)
    except OSError as error:
        raise CampaignError(
            f"profiles could not be installed in {target}: {error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "")
        ) from None


def _install_profiles(names: list[str], source: Path, target: Path) -> list[str]:
    report = []
    for name in names:
        origin, destination = source / name / "config.yaml", target / name / "config.yaml"
        if destination.exists():
            same = filecmp.cmp(origin, destination, shallow=False)
            report.append(
                f"{name}: {destination} "
                + (
                    "is already installed"
                    if same
                    else "exists and differs (your edits?): left as it is; compare it with " + str(origin)
                )
            )
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, destination)
        report.append(f"{name}: installed as {destination} (snakemake --profile {name})")
    return report
