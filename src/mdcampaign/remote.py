"""Other hosts, reached with the real ``ssh`` and ``rsync`` (so the user's
``~/.ssh/config`` applies: aliases, keys, ProxyJump, ControlMaster): the one module
that runs them, for the store (store.py) and for the sites' login nodes (deploy.py).

Every ssh call ends its options with ``--`` before the host, every rsync call before
its paths; hosts are checked to be host names (ssh inside rsync gets the host from
rsync, after rsync's own ``-l user``, so there the check is what keeps it from being
an option). Host keys are checked as the user's configuration says, never disabled;
BatchMode: nothing ever waits for a password prompt nobody will answer. Failures that
may pass (timeouts, dropped connections: exit codes 10, 12, 30, 35, 255) are retried
after a delay longer than the timeout; failures that will not pass (permission denied,
a changed host key, a full disk) stop at once with one clear line.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .errors import TransferError
from .locations import HOST_PATTERN

log = logging.getLogger(__name__)

RETRYABLE_RSYNC_CODES = {10, 12, 30, 35, 255}
# where rsync keeps a partly sent file between attempts (relative to the file's folder)
PARTIAL_DIR = ".rsync-partial"

# stderr text that means "retrying will not help", and what to tell the user
FATAL_MESSAGES = (
    (
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "the host key of {host} has changed (possible man-in-the-middle, "
        "or the server was reinstalled): check it, then update ~/.ssh/known_hosts (ssh-keygen -R {host})",
    ),
    (
        "Host key verification failed",
        "the host key of {host} could not be verified: connect once with `ssh {host}` to check and accept it",
    ),
    (
        "Permission denied (publickey",
        "ssh could not log in to {host} (Permission denied, publickey): check your key and ~/.ssh/config for this host",
    ),
    ("No space left on device", "the store on {host} is full (No space left on device) at {path}"),
    ("Disk quota exceeded", "the store on {host} is over quota (Disk quota exceeded) at {path}"),
    (
        "Permission denied",
        "permission denied on {host} writing {path}: check that the store directory exists "
        "and is writable by your user there",
    ),
    ("Read-only file system", "the store on {host} is read-only at {path}"),
    ("Could not resolve hostname", "ssh cannot resolve the host name {host} (is it in ~/.ssh/config?)"),
)


class Remote:
    """One host, reached over ssh. ``settings``: store.TransferSettings (its timeout,
    retries and delay)."""

    def __init__(self, host: str, settings):
        if not HOST_PATTERN.fullmatch(host):
            raise TransferError(f"'{host}' is not a host name (letters, digits, '.', '-' and '_', optionally user@)")
        self.host = host
        self.settings = settings

    @property
    def ssh_command(self) -> list[str]:
        return [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.settings.timeout_seconds}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            f"ServerAliveCountMax={max(2, self.settings.timeout_seconds // 15)}",
        ]

    def rsync_base(self) -> list[str]:
        # -s: remote paths reach rsync on the other side without a shell reading them
        return [
            "rsync",
            "-a",
            "-s",
            "-L",
            f"--partial-dir={PARTIAL_DIR}",
            f"--timeout={self.settings.timeout_seconds}",
            "-e",
            shlex.join(self.ssh_command),
        ]

    def run(
        self,
        command: list[str],
        what: str,
        path: str,
        on_fatal: Callable[[], None] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ssh/rsync, retrying what may pass; raise TransferError on the rest (its
        ``fatal``: whether retrying could not have helped). ``on_fatal`` runs first when
        it fails for good with a known cause (to remove a partial copy)."""
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            result = subprocess.run(command, capture_output=True, text=True, input=stdin)
            if result.returncode == 0:
                return result
            fatal = self.fatal_message(result.stderr, path)
            retryable = fatal is None and result.returncode in RETRYABLE_RSYNC_CODES
            # never an empty reason: what the command said (its stderr last), or that it said nothing
            said = " ".join(f"{result.stdout}\n{result.stderr}".split())[-300:]
            failure = (
                f"failed (exit {result.returncode}): {said}"
                if said
                else f"failed: no message from {Path(command[0]).name} (exit {result.returncode})"
            )
            if not retryable or attempt == attempts:
                if on_fatal and fatal is not None:
                    on_fatal()
                reason = fatal or f"{what} {failure}"
                if retryable and attempts > 1:
                    reason += f" (after {attempts} attempts)"
                error = TransferError(reason)
                error.fatal = fatal is not None
                error.returncode = result.returncode
                error.stderr = result.stderr
                raise error
            log.warning(
                "%s %s; retrying in %.0f s (attempt %d of %d)",
                what,
                failure,
                self.settings.delay,
                attempt + 1,
                attempts,
            )
            time.sleep(self.settings.delay)
        raise AssertionError("unreachable")

    def fatal_message(self, stderr: str, path: str) -> str | None:
        for needle, message in FATAL_MESSAGES:
            if needle in stderr:
                return message.format(host=self.host, path=path)
        return None

    def run_script(
        self,
        script: str,
        what: str,
        path: str,
        on_fatal: Callable[[], None] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess:
        """One shell script on the host (its login shell runs it), as ``run``."""
        return self.run([*self.ssh_command, "--", self.host, script], what, path, on_fatal, stdin)

    def run_once(self, script: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """A script on the host, once, its outcome returned whatever it is (for probes
        and clean-ups whose failure the caller judges)."""
        return subprocess.run(
            [*self.ssh_command, "--", self.host, script], capture_output=True, text=True, timeout=timeout
        )

    def rsync(
        self,
        options: list[str],
        sources: list[str],
        destination: str,
        what: str,
        path: str,
        on_fatal: Callable[[], None] | None = None,
    ) -> subprocess.CompletedProcess:
        """rsync to or from the host (``host:path`` on the remote side), as ``run``."""
        return self.run([*self.rsync_base(), *options, "--", *sources, destination], what, path, on_fatal)

    def arg(self, path: str) -> str:
        """``host:path`` as rsync takes it."""
        return f"{self.host}:{path}"
