"""A site's login node, over SSH (remote.Remote): each operation is one script that
starts with the site's own ``setup`` lines, enters its campaign folder (``path``) and
runs there. Everything of ours in these scripts is quoted; the setup lines are the
user's commands for that machine, run as they are written, and are the only lines
not written here. A failure is one line naming the site and what to do.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from . import layout
from .errors import CampaignError, TransferError
from .remote import Remote
from .sites import Site

# Exit statuses of a site script's own steps (its setup lines, its Python, its folder).
SETUP_FAILED, NO_PYTHON, OLD_PYTHON, NO_FOLDER = 90, 91, 92, 93
SSH_FAILED = 255
# How long one operation may take there (an installation of every dependency included).
SCRIPT_TIMEOUT_SECONDS = 3600


def setup_block(site: Site) -> str:
    """The site's setup lines in a function, and a check that they worked."""
    if not site.setup:
        return ""
    lines = "\n".join(site.setup)
    return f"mdcampaign_setup() {{\n{lines}\n}}\nmdcampaign_setup </dev/null >&2 || exit {SETUP_FAILED}\n"


def folder_words(site: Site) -> str:
    """Shell words that set $base to the site's campaign folder, expanding a leading
    $VARIABLE (a folder of that machine, e.g. $WORK) or ~, and nothing else."""
    path = site.path or "."
    match = re.match(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?(.*)$", path)
    if match:
        name, rest = match.groups()
        return f'base="${{{name}:?is not set there}}"{shlex.quote(rest) if rest else ""}'
    if path == "~" or path.startswith("~/"):
        return f'base="$HOME"{shlex.quote(path[1:]) if path[1:] else ""}'
    return f"base={shlex.quote(path)}"


class SiteMachine:
    """One site's login node."""

    def __init__(self, site: Site, settings):
        if not site.host:
            raise CampaignError(f"site {site.name} has no host: it is this machine")
        self.site = site
        try:
            self.remote = Remote(site.host, settings)
        except TransferError as error:
            raise CampaignError(f"site {site.name}: {error}") from None

    @property
    def name(self) -> str:
        return f"site {self.site.name} ({self.site.host})"

    def script(self, body: str) -> str:
        return (
            f"{setup_block(self.site)}{folder_words(self.site)}\n"
            f'mkdir -p -- "$base" 2>/dev/null && cd -- "$base" || '
            f'{{ echo "cannot make or enter $base" >&2; exit {NO_FOLDER}; }}\n'
            f"{body}\n"
        )

    def run(self, body: str, what: str, check: bool = True) -> subprocess.CompletedProcess:
        """``body`` in the site's campaign folder (made if missing), after its setup
        lines; CampaignError naming the site if it fails (``check``)."""
        try:
            result = self.remote.run_once(self.script(body), timeout=SCRIPT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise CampaignError(f"{self.name}: {what} did not finish within an hour") from None
        if check and result.returncode != 0:
            raise CampaignError(f"{self.name}: {self.explain(result, what)}")
        return result

    def explain(self, result: subprocess.CompletedProcess, what: str) -> str:
        said = " ".join(result.stderr.split())[-300:] or " ".join(result.stdout.split())[-300:]
        code = result.returncode
        if code == SSH_FAILED:
            fatal = self.remote.fatal_message(result.stderr, self.site.path or "~")
            return f"ssh cannot reach it: {fatal or said or 'no message from ssh'}"
        if code == SETUP_FAILED:
            return f"its setup lines failed there ({'; '.join(self.site.setup)}): {said or 'no message'}"
        if code == NO_FOLDER:
            return f"its campaign folder (path: {self.site.path}) cannot be made or entered there: {said}"
        if code in (NO_PYTHON, OLD_PYTHON):
            return (
                f"no Python 3.11 or newer as '{self.site.python}' there after its setup lines "
                f"({said or 'not found'}): add the line that loads one to its `setup:` "
                "(e.g. module load python3/3.11), or name one with `python:`"
            )
        return f"{what} failed there (exit {code}): {said or 'no message'}"

    def probe(self) -> dict:
        """Its Python, its campaign folder (resolved) and the build installed there."""
        python = shlex.quote(self.site.python)
        body = (
            f"py=$(command -v -- {python}) || {{ echo {python} not found >&2; exit {NO_PYTHON}; }}\n"
            f"\"$py\" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || "
            f'{{ "$py" --version >&2; exit {OLD_PYTHON}; }}\n'
            'echo "folder=$(pwd -P)"\n'
            f'echo "build=$(cat {layout.SITE_BUILD} 2>/dev/null)"\n'
            f'echo "python=$("$py" --version 2>&1)"'
        )
        result = self.run(body, "checking its Python and campaign folder")
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def send(self, files: dict[str, Path], folder: str, keep_existing: bool = False) -> int:
        """Copy files (name in the campaign folder: local path) into ``folder`` there,
        adding and updating only these, never deleting (``keep_existing``: never
        replacing either); how many were written."""
        if not files:
            return 0
        with tempfile.TemporaryDirectory(prefix="mdcampaign-deploy-") as staging:
            staging = Path(staging)
            for name, source in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(Path(source).resolve(), target)
            options = ["-r", "--checksum", "--chmod=u+rwX", "--out-format=%i %n"]
            options += ["--ignore-existing"] if keep_existing else []
            try:
                result = self.remote.rsync(
                    options, [f"{staging}/"], self.remote.arg(f"{folder}/"), f"copying to {self.name}", folder
                )
            except TransferError as error:
                raise CampaignError(f"{self.name}: {error}") from None
        return sum(1 for line in result.stdout.splitlines() if line.startswith(("<f", ">f")))

    def mdcampaign(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        """`mdcampaign ARGUMENTS` in the site's folder, in its environment."""
        venv = layout.SITE_VENV
        body = f'PATH="$(pwd)/{venv}/bin:$PATH"; export PATH; exec mdcampaign {shlex.join(arguments)}'
        return self.run(body, f"mdcampaign {' '.join(arguments[:2])}", check=check)
