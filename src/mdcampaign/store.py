"""The durable store: a local folder or ``[user@]host:/path`` reached with the real
``ssh`` and ``rsync`` (so the user's ``~/.ssh/config`` applies: aliases, keys,
ProxyJump, ControlMaster).

Both kinds offer the same operations, and both only ever expose complete, verified
data: a segment is written to a hidden partial directory, its checksums are checked
where it landed, and only then is it renamed into place. An existing copy is moved
aside and removed only after the new one is in place.

Over SSH, one rsync moves a whole segment directory. Transfers that fail for
reasons that may pass (timeouts, dropped connections: rsync exit codes 10, 12, 30,
35, 255) are retried after a delay longer than the timeout; failures that will not
pass (permission denied, a changed host key, a full disk) stop at once with one
clear line, after removing the partial directory so the remote disk is not left full.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import engine
from .errors import TransferError

log = logging.getLogger(__name__)

RETRYABLE_RSYNC_CODES = {10, 12, 30, 35, 255}
REMOTE_PATTERN = re.compile(r"^(?P<host>(?:[^@/:\s]+@)?[^@/:\s]+):(?P<path>.+)$")

# stderr text that means "retrying will not help", and what to tell the user
FATAL_MESSAGES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host key of {host} has changed (possible man-in-the-middle, "
     "or the server was reinstalled): check it, then update ~/.ssh/known_hosts (ssh-keygen -R {host})"),
    ("Host key verification failed", "the host key of {host} could not be verified: connect once with "
     "`ssh {host}` to check and accept it"),
    ("Permission denied (publickey", "ssh could not log in to {host} (Permission denied, publickey): check "
     "your key and ~/.ssh/config for this host"),
    ("No space left on device", "the store on {host} is full (No space left on device) at {path}"),
    ("Disk quota exceeded", "the store on {host} is over quota (Disk quota exceeded) at {path}"),
    ("Permission denied", "permission denied on {host} writing {path}: check that the store directory exists "
     "and is writable by your user there"),
    ("Read-only file system", "the store on {host} is read-only at {path}"),
    ("Could not resolve hostname", "ssh cannot resolve the host name {host} (is it in ~/.ssh/config?)"),
)


@dataclass
class TransferSettings:
    timeout_seconds: int = 60
    retries: int = 3
    retry_delay_seconds: float | None = None  # default: the timeout plus 10 s

    @property
    def delay(self) -> float:
        return self.retry_delay_seconds if self.retry_delay_seconds is not None else self.timeout_seconds + 10


def is_remote(store: str) -> bool:
    return bool(REMOTE_PATTERN.match(store)) and not Path(store).exists()


def open_store(store: str, settings: TransferSettings | None = None) -> "Store":
    match = REMOTE_PATTERN.match(store)
    if match and not Path(store).exists():
        return SshStore(match["host"], match["path"], settings or TransferSettings())
    return LocalStore(Path(store))


class Store:
    """What `stage`, `fetch` and `analyze` need from the store. Paths are relative
    to the store's root and use '/'."""

    def describe(self, relative: str = "") -> str:
        raise NotImplementedError

    def put_directory(self, files: dict[str, Path], relative_dir: str) -> None:
        """Make ``relative_dir`` hold exactly ``files`` (name -> local path; or key ->
        path, stored under the path's own name), verified by checksum."""
        raise NotImplementedError

    def pin(self, source: Path, relative: str, sha256: str) -> None:
        """Store a per-simulation file once; an identical copy is left alone and a
        different one is an error (a simulation never changes its system)."""
        raise NotImplementedError

    def get(self, items: list[tuple[str, Path, str]]) -> None:
        """Copy (relative path, local destination, sha256) items out of the store."""
        raise NotImplementedError

    def collect(self, relative_dir: str, file_name: str, cache: Path) -> Path:
        """A local folder mirroring ``relative_dir`` with only the files called
        ``file_name`` (e.g. every manifest.json): the store itself when local, else a
        copy made with one transfer."""
        raise NotImplementedError

    def local_copy(self, relative_dir: str, cache: Path, expected: dict[str, str]) -> Path:
        """A local folder holding the files ``expected`` (path below ``relative_dir``
        -> sha256): the store itself when it is local, else a verified copy in
        ``cache`` made with one transfer."""
        raise NotImplementedError


def _by_name(files: dict[str, Path]) -> dict[str, Path]:
    """Files to store, by the name they get in the store: the key if it looks like a
    file name, else the file's own name (so Snakemake's named outputs can be passed)."""
    return {(key if "." in key else Path(path).name): Path(path) for key, path in files.items()}


def _checksums(files: dict[str, Path]) -> dict[str, str]:
    return {name: engine.sha256_file(path) for name, path in files.items()}


class LocalStore(Store):
    def local_copy(self, relative_dir: str, cache: Path, expected: dict[str, str]) -> Path:
        return self.root / relative_dir

    def collect(self, relative_dir: str, file_name: str, cache: Path) -> Path:
        return self.root / relative_dir

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self, relative: str = "") -> str:
        return str(self.root / relative) if relative else str(self.root)

    def put_directory(self, files: dict[str, Path], relative_dir: str) -> None:
        files = _by_name(files)
        sums = _checksums(files)
        target = self.root / relative_dir
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            for name, source in files.items():
                copy_verified(Path(source), partial / name, sums.get(name))
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise TransferError(f"cannot write the store at {self.describe(relative_dir)}: {error.strerror or error}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        swap_into_place(partial, target)

    def pin(self, source: Path, relative: str, sha256: str) -> None:
        target = self.root / relative
        if target.exists():
            if engine.sha256_file(target) != sha256:
                raise TransferError(_changed_system(self.describe(relative)))
            return
        try:
            copy_verified(Path(source), target, sha256)
        except OSError as error:
            raise TransferError(f"cannot write the store at {self.describe(relative)}: {error.strerror or error}") from None

    def get(self, items: list[tuple[str, Path, str]]) -> None:
        for relative, destination, sha256 in items:
            source = self.root / relative
            if not source.exists():
                raise TransferError(f"{self.describe(relative)} is missing from the store")
            copy_verified(source, Path(destination), sha256)


def _changed_system(where: str) -> str:
    return (
        f"{where} already exists with different content: this simulation was started from a different "
        "system; refusing to mix them (move the old results away to start over)"
    )


def copy_verified(source: Path, target: Path, sha256: str | None = None) -> None:
    """Copy one file atomically and check the copy's sha256 (against ``sha256`` when
    given, else against the source)."""
    expected = sha256 or engine.sha256_file(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, tmp)
        engine.fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if engine.sha256_file(tmp) != expected:
        tmp.unlink(missing_ok=True)
        raise TransferError(f"{source} does not match its recorded checksum (corrupted, or changed since it was written)")
    os.replace(tmp, target)


def swap_into_place(partial: Path, target: Path) -> None:
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.replaced-{int(time.time())}")
        os.replace(target, aside)
    os.replace(partial, target)
    engine.fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


class SshStore(Store):
    def __init__(self, host: str, root: str, settings: TransferSettings):
        self.host = host
        self.root = root.rstrip("/") or "/"
        self.settings = settings

    def describe(self, relative: str = "") -> str:
        return f"{self.host}:{self._path(relative)}"

    def _path(self, relative: str = "") -> str:
        return f"{self.root}/{relative}" if relative else self.root

    @property
    def _ssh_command(self) -> list[str]:
        # BatchMode: never wait for a password prompt nobody will answer.
        # Host keys are checked as the user's configuration says; never disabled here.
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.settings.timeout_seconds}",
                "-o", "ServerAliveInterval=15", "-o", f"ServerAliveCountMax={max(2, self.settings.timeout_seconds // 15)}"]

    def _rsync_base(self) -> list[str]:
        # -s: remote paths reach rsync on the other side without a shell reading them
        return ["rsync", "-a", "-s", "-L", "--partial-dir=.rsync-partial", f"--timeout={self.settings.timeout_seconds}",
                "-e", shlex.join(self._ssh_command)]

    # -- running commands -------------------------------------------------------------

    def _run(self, command: list[str], what: str, path: str, cleanup: str | None = None) -> subprocess.CompletedProcess:
        """Run ssh/rsync, retrying what may pass; raise TransferError on the rest."""
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode == 0:
                return result
            fatal = self._fatal_message(result.stderr, path)
            retryable = fatal is None and result.returncode in RETRYABLE_RSYNC_CODES
            stderr = " ".join(result.stderr.split())[-300:]
            if not retryable or attempt == attempts:
                if cleanup and fatal is not None:
                    self._cleanup(cleanup)
                reason = fatal or f"{what} failed (exit {result.returncode}): {stderr or 'no message'}"
                if retryable:
                    reason += f" (after {attempts} attempts)"
                raise TransferError(reason)
            log.warning("%s failed (exit %d: %s); retrying in %.0f s (attempt %d of %d)", what, result.returncode,
                        stderr, self.settings.delay, attempt + 1, attempts)
            time.sleep(self.settings.delay)
        raise AssertionError("unreachable")

    def _fatal_message(self, stderr: str, path: str) -> str | None:
        for needle, message in FATAL_MESSAGES:
            if needle in stderr:
                return message.format(host=self.host, path=path)
        return None

    def _remote(self, script: str, what: str, path: str, cleanup: str | None = None) -> subprocess.CompletedProcess:
        return self._run([*self._ssh_command, self.host, script], what, self.describe(path), cleanup)

    def _cleanup(self, relative: str) -> None:
        subprocess.run([*self._ssh_command, self.host, f"rm -rf {shlex.quote(self._path(relative))}"],
                       capture_output=True, text=True)

    # -- operations -------------------------------------------------------------------

    def put_directory(self, files: dict[str, Path], relative_dir: str) -> None:
        files = _by_name(files)
        sums = _checksums(files)
        parent, name = posixpath.split(relative_dir)
        partial = posixpath.join(parent, f".{name}.partial")
        with tempfile.TemporaryDirectory(prefix="mdcampaign-fetch-") as staging:
            for file_name, source in files.items():
                os.symlink(Path(source).resolve(), Path(staging) / file_name)  # rsync -L sends the data
            self._remote(f"mkdir -p {shlex.quote(self._path(partial))}", f"creating {self.describe(parent)}", parent)
            self._run([*self._rsync_base(), "--delete", f"{staging}/", f"{self.host}:{self._path(partial)}/"],
                      f"copying to {self.describe(relative_dir)}", self.describe(relative_dir), cleanup=partial)
        checks = "\n".join(f"{sha}  {file_name}" for file_name, sha in sums.items())
        stamp = int(time.time())
        script = "\n".join([
            "set -e",
            f"cd {shlex.quote(self._path(parent))}",
            f"( cd {shlex.quote('.' + name + '.partial')} && rm -rf .rsync-partial && "
            f"printf '%s\\n' {shlex.quote(checks)} | sha256sum --quiet -c - )",
            f"if [ -e {shlex.quote(name)} ]; then mv {shlex.quote(name)} {shlex.quote(f'.{name}.replaced-{stamp}')}; fi",
            f"mv {shlex.quote('.' + name + '.partial')} {shlex.quote(name)}",
            f"rm -rf {shlex.quote(f'.{name}.replaced-{stamp}')}",
        ])
        result = subprocess.run([*self._ssh_command, self.host, script], capture_output=True, text=True)
        if result.returncode != 0:
            raise TransferError(
                f"the copy of the segment at {self.describe(relative_dir)} failed verification or could not be "
                f"moved into place: {' '.join((result.stdout + result.stderr).split())[-300:]}"
            )

    def pin(self, source: Path, relative: str, sha256: str) -> None:
        path = self._path(relative)
        check = self._remote(f"if [ -e {shlex.quote(path)} ]; then sha256sum {shlex.quote(path)}; fi",
                             f"checking {self.describe(relative)}", relative)
        existing = check.stdout.split()[0] if check.stdout.strip() else None
        if existing == sha256:
            return
        if existing is not None:
            raise TransferError(_changed_system(self.describe(relative)))
        parent, name = posixpath.split(relative)
        tmp = posixpath.join(parent, f".{name}.partial")
        self._remote(f"mkdir -p {shlex.quote(self._path(parent))}", f"creating {self.describe(parent)}", parent)
        self._run([*self._rsync_base(), str(source), f"{self.host}:{self._path(tmp)}"],
                  f"copying {source.name} to {self.describe(relative)}", self.describe(relative), cleanup=tmp)
        self._remote(
            f"cd {shlex.quote(self._path(parent))} && echo {shlex.quote(sha256 + '  .' + name + '.partial')} | "
            f"sha256sum --quiet -c - && mv {shlex.quote('.' + name + '.partial')} {shlex.quote(name)}",
            f"verifying {self.describe(relative)}", relative,
        )

    def get(self, items: list[tuple[str, Path, str]]) -> None:
        if not items:
            return
        Path(items[0][1]).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mdcampaign-stage-", dir=Path(items[0][1]).parent) as landing:
            sources = [f"{self.host}:{self._path(rel)}" for rel, _, _ in items]
            names = [Path(rel).name for rel, _, _ in items]
            if len(set(names)) != len(names):
                for relative, destination, sha256 in items:  # same names: one at a time
                    self.get_one(relative, destination, sha256)
                return
            self._run([*self._rsync_base(), *sources, f"{landing}/"],
                      f"copying from {self.describe()}", self.describe(items[0][0]))
            for (relative, destination, sha256), name in zip(items, names):
                copy_verified(Path(landing) / name, Path(destination), sha256)

    def local_copy(self, relative_dir: str, cache: Path, expected: dict[str, str]) -> Path:
        cache = Path(cache)
        cache.mkdir(parents=True, exist_ok=True)
        filters = []
        directories = {str(parent) for name in expected for parent in Path(name).parents} - {"."}
        for directory in sorted(directories):
            filters += ["--include", f"/{directory}/"]
        filters += [arg for name in sorted(expected) for arg in ("--include", f"/{name}")] + ["--exclude", "*"]
        self._run([*self._rsync_base(), "--delete", *filters, f"{self.host}:{self._path(relative_dir)}/", f"{cache}/"],
                  f"copying {self.describe(relative_dir)}", self.describe(relative_dir))
        for name, sha256 in expected.items():
            if not (cache / name).exists():
                raise TransferError(f"{self.describe(relative_dir + '/' + name)} is missing from the store")
            if engine.sha256_file(cache / name) != sha256:
                raise TransferError(f"{self.describe(relative_dir + '/' + name)} does not match its manifest's checksum")
        return cache

    def collect(self, relative_dir: str, file_name: str, cache: Path) -> Path:
        cache = Path(cache)
        cache.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run([*self._ssh_command, self.host, f"test -d {shlex.quote(self._path(relative_dir))}"],
                               capture_output=True, text=True)
        if probe.returncode == 1:  # nothing stored yet
            return cache
        self._run([*self._rsync_base(), "--delete", "--prune-empty-dirs", "--include", "*/", "--include", file_name,
                   "--exclude", "*", f"{self.host}:{self._path(relative_dir)}/", f"{cache}/"],
                  f"copying the {file_name} files of {self.describe(relative_dir)}", self.describe(relative_dir))
        return cache

    def get_one(self, relative: str, destination: Path, sha256: str) -> None:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mdcampaign-stage-", dir=Path(destination).parent) as landing:
            self._run([*self._rsync_base(), f"{self.host}:{self._path(relative)}", f"{landing}/"],
                      f"copying {self.describe(relative)}", self.describe(relative))
            copy_verified(Path(landing) / Path(relative).name, Path(destination), sha256)
