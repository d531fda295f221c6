"""What a store location says: a local folder or ``[user@]host:/path``. Plain text
only (no OpenMM, no ssh), so that validation can check a location at every start."""

from __future__ import annotations

import re
from pathlib import Path

# As rsync and scp read it: a colon before any slash means host:path.
REMOTE_PATTERN = re.compile(r"^(?P<host>[^/:]+):(?P<path>.*)$")
# What ssh and rsync get as a host: never an option (no leading '-'), nothing a shell
# or ssh_config would read specially.
HOST_PATTERN = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9_][A-Za-z0-9_.-]*")
SHELL_VARIABLE = re.compile(r"\$\{?[A-Za-z_]")


def split_remote(store: str, base_dir: Path | str = ".") -> tuple[str, str] | None:
    """(host, path) of a remote store, or None for a local folder. A path that exists
    here is local even if it has a colon in its name."""
    match = REMOTE_PATTERN.match(store)
    if match is None or (Path(base_dir) / store).exists():
        return None
    return match["host"], match["path"]


def is_remote(store: str, base_dir: Path | str = ".") -> bool:
    return split_remote(store, base_dir) is not None


def check_location(store: str, base_dir: Path | str = ".") -> str | None:
    """Why a store location (``~`` and ``$VARS`` already expanded where local) can
    never work, as a clause that follows the store's value ("'x:' names host 'x' but
    ..."), or None. Nothing is run, nothing is contacted. ``base_dir``: what a
    relative local store is relative to (the campaign directory)."""
    remote = split_remote(store, base_dir)
    if remote is None:
        if (Path(base_dir) / store).is_file():
            return "is a file, not a folder (give the folder that holds the campaign's results)"
        return None
    host, path = remote
    if not HOST_PATTERN.fullmatch(host):
        return (
            f"names host '{host}', which is not a host name (letters, digits, '.', '-' and '_', optionally "
            "user@ before it; not starting with '-'); a local folder with ':' in its name is written ./NAME"
        )
    if not path.strip():
        return f"names host '{host}' but no path after ':' (write {host}:/path/to/store)"
    if path.startswith(":") or (host == "rsync" and path.startswith("//")):
        return "is an rsync daemon address (host::module, rsync://); the store is reached over ssh: write host:/path"
    if re.match(r"~[^/]", path):
        user = path[1:].split("/", 1)[0]
        return (
            f"starts its path on {host} with '~{user}', which cannot be expanded from here: write the path in "
            f"full (`ssh {host} 'echo ~{user}'` shows it)"
        )
    if SHELL_VARIABLE.search(path):
        return (
            f"has a variable in its path on {host}, which cannot be expanded from here: write the path in full "
            f"(`ssh {host} 'echo {path}'` shows it)"
        )
    return None
