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

import functools
import logging
import os
import posixpath
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import TransferError
from .files import fsync_dir, fsync_file, sha256_file
from .locations import check_location, split_remote
from .remote import PARTIAL_DIR, Remote

log = logging.getLogger(__name__)


@functools.cache
def _shell_library(path: Path) -> str:
    return path.read_text()


def shell_program(library: Path, call: str, values: dict) -> str:
    """A program for Store.run_script: ``values`` as shell variables (each quoted,
    whatever it is), then a packaged shell ``library`` of functions (store_scripts/),
    then ``call``."""
    assignments = "\n".join(f"{name}={shlex.quote(str(value))}" for name, value in values.items())
    return f"{assignments}\n{_shell_library(library)}\n{call}\n"


@dataclass
class TransferSettings:
    """``transfer:`` of the config."""

    timeout_seconds: int
    retries: int
    retry_delay_seconds: float | None = None  # default: the timeout plus 10 s (the schema has none)

    @classmethod
    def of(cls, **values) -> TransferSettings:
        """Settings of these values, the schema's defaults for the others."""
        from .validation import schema_defaults

        return cls(**{**schema_defaults("transfer"), **values})

    @property
    def delay(self) -> float:
        return self.retry_delay_seconds if self.retry_delay_seconds is not None else self.timeout_seconds + 10


def remote_root(path: str) -> str:
    """A remote store path as given to ssh and rsync, both of which start in the remote
    home: ``~`` and ``~/x`` become ``.`` and ``x``; a relative path that starts with
    '-' gets './' so that no remote command can read it as an option."""
    if path == "~" or path.startswith("~/"):
        path = path[1:].lstrip("/") or "."
    path = path.rstrip("/") or ("/" if path.startswith("/") else ".")
    return f"./{path}" if path.startswith("-") else path


def open_store(store: str, settings: TransferSettings | None = None) -> Store:
    """The store ``store`` names; TransferError (one line) if `check_location` says it
    can never work: e.g. ``host:`` with no path is never made into a local folder."""
    problem = check_location(store)
    if problem:
        raise TransferError(f"store '{store}' {problem}")
    parts = split_remote(store)
    if parts is not None:
        return SshStore(*parts, settings or TransferSettings.of())
    return LocalStore(Path(store))


class Store:
    """What `stage`, `fetch` and `analyze` need from the store. Paths are relative
    to the store's root and use '/'."""

    def describe(self, relative: str = "") -> str:
        raise NotImplementedError

    def put_directory(
        self, files: dict[str, Path], relative_dir: str, guard: str | None = None, keep_existing: bool = False
    ) -> bool:
        """Make ``relative_dir`` hold exactly ``files`` (name -> local path; or key ->
        path, stored under the path's own name), verified by checksum. ``guard``: a
        shell script run in the store's root just before the rename into place; if it
        fails, nothing is put in place (a lease check, see claims.py). ``keep_existing``:
        a ``relative_dir`` already in place is left as it is. True if ``files`` were put
        in place, False if an existing copy was kept."""
        raise NotImplementedError

    def run_script(self, script: str, what: str, stdin: str | None = None) -> str:
        """Run a POSIX shell script with the store's root as its working directory, on
        the store's host (the one way claims reach the store, see claims.py), ``stdin``
        its input (data too large for its command line); its output. TransferError if
        it fails."""
        raise NotImplementedError

    def pin(self, source: Path, relative: str, sha256: str, guard: str | None = None) -> None:
        """Store a per-simulation file once; an identical copy is left alone and a
        different one is an error (a simulation never changes its system), except
        under ``guard`` (the claim of a simulation whose first segment is not stored:
        a site that lost its claim before storing segment 0 may have pinned its own
        setup's files, which the new holder replaces with its own)."""
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
    return {name: sha256_file(path) for name, path in files.items()}


class LocalStore(Store):
    def local_copy(self, relative_dir: str, cache: Path, expected: dict[str, str]) -> Path:
        return self.root / relative_dir

    def collect(self, relative_dir: str, file_name: str, cache: Path) -> Path:
        return self.root / relative_dir

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self, relative: str = "") -> str:
        return str(self.root / relative) if relative else str(self.root)

    def run_script(self, script: str, what: str, stdin: str | None = None) -> str:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TransferError(f"cannot create the store at {self.root}: {error.strerror or error}") from None
        result = subprocess.run(["sh", "-c", script], cwd=self.root, capture_output=True, text=True, input=stdin)
        if result.returncode != 0:
            said = " ".join(result.stderr.split())[-300:] or f"exit {result.returncode}"
            raise TransferError(f"{what} failed at {self.root}: {said}")
        return result.stdout

    def put_directory(
        self, files: dict[str, Path], relative_dir: str, guard: str | None = None, keep_existing: bool = False
    ) -> bool:
        files = _by_name(files)
        sums = _checksums(files)
        target = self.root / relative_dir
        if keep_existing and target.exists():  # in place only by the rename below: complete
            return False
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            for name, source in files.items():
                copy_verified(Path(source), partial / name, sums.get(name))
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise TransferError(
                f"cannot write the store at {self.describe(relative_dir)}: {error.strerror or error}"
            ) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if guard:
            try:
                self.run_script(guard, f"checking before storing {self.describe(relative_dir)}")
            except TransferError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        swap_into_place(partial, target)
        return True

    def pin(self, source: Path, relative: str, sha256: str, guard: str | None = None) -> None:
        target = self.root / relative
        if target.exists():
            if sha256_file(target) == sha256:
                return
            if not guard:
                raise TransferError(_changed_system(self.describe(relative)))
            self.run_script(guard, f"checking before replacing {self.describe(relative)}")
        try:
            copy_verified(Path(source), target, sha256)
        except OSError as error:
            raise TransferError(
                f"cannot write the store at {self.describe(relative)}: {error.strerror or error}"
            ) from None

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
    expected = sha256 or sha256_file(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, tmp)
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sha256_file(tmp) != expected:
        tmp.unlink(missing_ok=True)
        raise TransferError(
            f"{source} does not match its recorded checksum (corrupted, or changed since it was written)"
        )
    os.replace(tmp, target)


def swap_into_place(partial: Path, target: Path) -> None:
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.replaced-{int(time.time())}")
        os.replace(target, aside)
    os.replace(partial, target)
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


class SshStore(Store):
    """Every ssh call ends its options with ``--`` before the host, every rsync call
    before its paths; hosts are checked to be host names (ssh inside rsync gets the
    host from rsync, after rsync's own ``-l user``, so there the check is what keeps
    it from being an option); local paths reach rsync absolute (never read as options,
    never as ``host:path``); remote paths never start with '-'."""

    def __init__(self, host: str, root: str, settings: TransferSettings):
        # open_store has checked this already; here so that no other way of making an
        # SshStore can hand ssh or rsync an option or an unusable path (below
        # os.devnull nothing exists, so the text is read as host:path)
        problem = check_location(f"{host}:{root}", os.devnull)
        if problem:
            raise TransferError(f"store '{host}:{root}' {problem}")
        self.host = host
        self.root = remote_root(root)
        self.settings = settings
        self.remote = Remote(host, settings)

    def describe(self, relative: str = "") -> str:
        return f"{self.host}:{self._path(relative)}"

    def _path(self, relative: str = "") -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def _remote(self, script: str, what: str, path: str, cleanup: str | None = None) -> subprocess.CompletedProcess:
        return self.remote.run_script(script, what, self.describe(path), self._on_fatal(cleanup))

    def _on_fatal(self, cleanup: str | None):
        """What to do when a step fails for good: remove its partial copy (a full disk
        is not left full)."""
        return (lambda: self._cleanup(cleanup)) if cleanup else None

    def _rsync(
        self,
        options: list[str],
        sources: list[str],
        destination: str,
        what: str,
        path: str,
        cleanup: str | None = None,
        size: int = 0,
    ) -> subprocess.CompletedProcess:
        """rsync; sending ``size`` bytes to the store (``cleanup``: where they land), a
        failure that leaves less room there than that is a full disk, whatever rsync
        said (it may die with exit 11 and no message of the remote's ENOSPC)."""
        try:
            return self.remote.rsync(options, sources, destination, what, path, self._on_fatal(cleanup))
        except TransferError as error:
            if not size or cleanup is None or getattr(error, "fatal", False):
                raise
            free = self._free_bytes(posixpath.dirname(cleanup))
            if free is None or free >= size:
                raise
            self._cleanup(cleanup)
            raise TransferError(
                f"the store on {self.host} is full (No space left on device) at {path}: {free} bytes free "
                f"there, {size} needed"
            ) from None

    def _free_bytes(self, relative: str) -> int | None:
        """Bytes available to us in the store's file system at ``relative`` (None if it
        cannot be told)."""
        result = self.remote.run_once(f"df -Pk -- {shlex.quote(self._path(relative))} | tail -n 1")
        fields = result.stdout.split()
        try:
            return int(fields[3]) * 1024 if result.returncode == 0 else None
        except (IndexError, ValueError):
            return None

    def _remote_arg(self, relative: str) -> str:
        return f"{self.host}:{self._path(relative)}"

    def _cleanup(self, relative: str) -> None:
        """Remove a partial copy, and what rsync kept of it in its partial folder (for a
        single file that folder is beside it, and would keep a full disk full)."""
        parent, name = posixpath.split(self._path(relative))
        kept = posixpath.join(parent, PARTIAL_DIR)
        self.remote.run_once(
            f"rm -rf -- {shlex.quote(self._path(relative))} {shlex.quote(posixpath.join(kept, name))}; "
            f"rmdir -- {shlex.quote(kept)} 2>/dev/null; true"
        )

    # -- operations -------------------------------------------------------------------

    def run_script(self, script: str, what: str, stdin: str | None = None) -> str:
        root = shlex.quote(self.root)
        script = f"mkdir -p -- {root} && cd -- {root} && sh -c {shlex.quote(script)}"
        return self.remote.run_script(script, what, self.describe(""), stdin=stdin).stdout

    def put_directory(
        self, files: dict[str, Path], relative_dir: str, guard: str | None = None, keep_existing: bool = False
    ) -> bool:
        files = _by_name(files)
        sums = _checksums(files)
        parent, name = posixpath.split(relative_dir)
        partial = posixpath.join(parent, f".{name}.partial")
        with tempfile.TemporaryDirectory(prefix="mdcampaign-fetch-") as staging:
            staging = Path(staging).absolute()
            for file_name, source in files.items():
                os.symlink(Path(source).resolve(), staging / file_name)  # rsync -L sends the data
            self._remote(f"mkdir -p -- {shlex.quote(self._path(partial))}", f"creating {self.describe(parent)}", parent)
            self._rsync(
                ["--delete"],
                [f"{staging}/"],
                f"{self._remote_arg(partial)}/",
                f"copying to {self.describe(relative_dir)}",
                self.describe(relative_dir),
                cleanup=partial,
                size=sum(Path(source).stat().st_size for source in files.values()),
            )
        return self._finish(parent, name, sums, stamp=int(time.time()), guard=guard, keep_existing=keep_existing)

    def _finish(
        self,
        parent: str,
        name: str,
        sums: dict[str, str],
        stamp: int,
        guard: str | None = None,
        keep_existing: bool = False,
    ) -> bool:
        """Check the partial copy where it landed and rename it into place, replacing an
        older copy (``keep_existing``: leaving it, and the partial copy goes). Retried
        like every other step, so it must be idempotent: when the partial copy is gone
        and the target holds exactly these files (an attempt whose answer was lost with
        the connection did the rename), that is success. False if a copy was kept."""
        checks = shlex.quote("\n".join(f"{sha}  {file_name}" for file_name, sha in sums.items()))
        expected = shlex.quote("\n".join(sorted(f"./{file_name}" for file_name in sums)))
        partial, target, aside = (
            shlex.quote(f"./{n}") for n in (f".{name}.partial", name, f".{name}.replaced-{stamp}")
        )
        script = "\n".join(
            [
                "set -e",
                "home=$(pwd)",
                f"cd {shlex.quote(self._path(parent))}",
                *([f"if [ -d {target} ]; then rm -rf {partial}; echo kept; exit 0; fi"] if keep_existing else []),
                f"if [ -d {partial} ]; then",
                f"  ( cd {partial} && rm -rf ./{PARTIAL_DIR} && printf '%s\\n' {checks} | sha256sum --quiet -c - )",
                *(
                    [
                        f'  ( cd "$home" && cd -- {shlex.quote(self.root)} && sh -c {shlex.quote(guard)} ) || '
                        f"{{ rm -rf {partial}; exit 1; }}"
                    ]
                    if guard
                    else []
                ),
                f"  if [ -e {target} ]; then rm -rf {aside}; mv -- {target} {aside}; fi",
                f"  mv -- {partial} {target}",
                f"elif [ -d {target} ]; then",
                f"  ( cd {target} && printf '%s\\n' {checks} | sha256sum --quiet -c - && "
                f'[ "$(find . -type f | LC_ALL=C sort)" = "$(printf \'%s\\n\' {expected} | LC_ALL=C sort)" ] ) || '
                f"{{ echo 'the partial copy is gone and the copy in place is not the one just sent' >&2; exit 1; }}",
                "else",
                "  echo 'the partial copy is gone and nothing is in place' >&2; exit 1",
                "fi",
                f"rm -rf {aside}",
            ]
        )
        result = self._remote(
            script,
            f"verifying the copy of the segment at {self.describe(posixpath.join(parent, name))} and "
            "moving it into place",
            posixpath.join(parent, name),
        )
        return result.stdout.strip() != "kept"

    def pin(self, source: Path, relative: str, sha256: str, guard: str | None = None) -> None:
        path = self._path(relative)
        check = self._remote(
            f"if [ -e {shlex.quote(path)} ]; then sha256sum < {shlex.quote(path)}; fi",
            f"checking {self.describe(relative)}",
            relative,
        )
        existing = check.stdout.split()[0] if check.stdout.strip() else None
        if existing == sha256:
            return
        if existing is not None and not guard:
            raise TransferError(_changed_system(self.describe(relative)))
        parent, name = posixpath.split(relative)
        tmp = posixpath.join(parent, f".{name}.partial")
        self._remote(f"mkdir -p -- {shlex.quote(self._path(parent))}", f"creating {self.describe(parent)}", parent)
        self._rsync(
            [],
            [str(Path(source).absolute())],
            self._remote_arg(tmp),
            f"copying {Path(source).name} to {self.describe(relative)}",
            self.describe(relative),
            cleanup=tmp,
            size=Path(source).stat().st_size,
        )
        check = f"( cd -- {shlex.quote(self.root)} && sh -c {shlex.quote(guard)} ) && " if guard else ""
        self._remote(
            f"{check}cd {shlex.quote(self._path(parent))} && echo {shlex.quote(sha256 + '  .' + name + '.partial')} | "
            f"sha256sum --quiet -c - && mv -- {shlex.quote('./.' + name + '.partial')} {shlex.quote('./' + name)}",
            f"verifying {self.describe(relative)}",
            relative,
        )

    def get(self, items: list[tuple[str, Path, str]]) -> None:
        if not items:
            return
        near = Path(items[0][1]).absolute().parent  # absolute: never read by rsync as an option or host:path
        near.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mdcampaign-stage-", dir=near) as landing:
            sources = [self._remote_arg(rel) for rel, _, _ in items]
            names = [Path(rel).name for rel, _, _ in items]
            if len(set(names)) != len(names):
                for relative, destination, sha256 in items:  # same names: one at a time
                    self.get_one(relative, destination, sha256)
                return
            self._rsync([], sources, f"{landing}/", f"copying from {self.describe()}", self.describe(items[0][0]))
            for (_, destination, sha256), name in zip(items, names, strict=True):
                copy_verified(Path(landing) / name, Path(destination), sha256)

    def local_copy(self, relative_dir: str, cache: Path, expected: dict[str, str]) -> Path:
        cache = Path(cache).absolute()
        cache.mkdir(parents=True, exist_ok=True)
        filters = []
        directories = {str(parent) for name in expected for parent in Path(name).parents} - {"."}
        for directory in sorted(directories):
            filters += ["--include", f"/{directory}/"]
        filters += [arg for name in sorted(expected) for arg in ("--include", f"/{name}")] + ["--exclude", "*"]
        self._rsync(
            ["--delete", *filters],
            [f"{self._remote_arg(relative_dir)}/"],
            f"{cache}/",
            f"copying {self.describe(relative_dir)}",
            self.describe(relative_dir),
        )
        for name, sha256 in expected.items():
            if not (cache / name).exists():
                raise TransferError(f"{self.describe(relative_dir + '/' + name)} is missing from the store")
            if sha256_file(cache / name) != sha256:
                raise TransferError(
                    f"{self.describe(relative_dir + '/' + name)} does not match its manifest's checksum"
                )
        return cache

    def collect(self, relative_dir: str, file_name: str, cache: Path) -> Path:
        cache = Path(cache).absolute()
        cache.mkdir(parents=True, exist_ok=True)
        probe = self.remote.run_once(f"test -d {shlex.quote(self._path(relative_dir))}")
        if probe.returncode == 1:  # nothing stored yet
            return cache
        self._rsync(
            ["--delete", "--prune-empty-dirs", "--include", "*/", "--include", file_name, "--exclude", "*"],
            [f"{self._remote_arg(relative_dir)}/"],
            f"{cache}/",
            f"copying the {file_name} files of {self.describe(relative_dir)}",
            self.describe(relative_dir),
        )
        return cache

    def get_one(self, relative: str, destination: Path, sha256: str) -> None:
        near = Path(destination).absolute().parent
        near.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mdcampaign-stage-", dir=near) as landing:
            self._rsync(
                [],
                [self._remote_arg(relative)],
                f"{landing}/",
                f"copying {self.describe(relative)}",
                self.describe(relative),
            )
            copy_verified(Path(landing) / Path(relative).name, Path(destination), sha256)
