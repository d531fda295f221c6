"""A remote store over real SSH (scripts/ci/sshd-up: OpenSSH on loopback, user
`mdstore`): transfers, faults (server killed mid-transfer, permission denied, a
changed host key), the campaign end to end with its store there, and two sites
sharing one store. Skipped, with the reason, when the test server is not running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, STRUCTURES, snakemake, write_campaign
from mdcampaign.errors import TransferError
from mdcampaign.store import SshStore, TransferSettings, open_store

CI_DIR = Path(os.environ.get("MDCAMPAIGN_CI_DIR", "/tmp/mdcampaign-ci"))
SSH_DIR = CI_DIR / "ssh"
SSH_BIN = SSH_DIR / "bin"
HOST = "mdstore"
STORE_ROOT = "/home/mdstore/store"


def server_problem() -> str | None:
    if not (SSH_BIN / "ssh").exists():
        return "the test SSH server is not set up (run scripts/ci/sshd-up)"
    result = subprocess.run([str(SSH_BIN / "ssh"), HOST, "true"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return f"the test SSH server does not answer ({result.stderr.strip()[:150]}); run scripts/ci/sshd-up"
    return None


pytestmark = [pytest.mark.ssh, pytest.mark.skipif(server_problem() is not None, reason=str(server_problem()))]

FAST = TransferSettings.of(timeout_seconds=5, retries=3, retry_delay_seconds=6)


@pytest.fixture
def ssh_path(monkeypatch):
    """Plain `ssh mdstore` works through the test server's client configuration."""
    monkeypatch.setenv("PATH", f"{SSH_BIN}:{os.environ['PATH']}")
    return f"{SSH_BIN}:{os.environ['PATH']}"


@pytest.fixture
def remote_root(ssh_path):
    root = f"{STORE_ROOT}/test-{uuid.uuid4().hex[:8]}"
    yield root
    remote(f"rm -rf {root}", check=False)


def remote(command: str, check: bool = True) -> str:
    result = subprocess.run([str(SSH_BIN / "ssh"), HOST, command], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout


def remote_sums(path: str) -> dict[str, str]:
    out = remote(f"cd {path} && find . -type f | sort | xargs -r sha256sum")
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines()}


def files(tmp_path: Path, sizes: dict[str, int]) -> dict[str, Path]:
    made = {}
    for name, size in sizes.items():
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        made[name] = path
    return made


def test_segment_round_trip_is_verified_and_atomic(tmp_path, remote_root):
    from mdcampaign.files import sha256_file

    store = open_store(f"{HOST}:{remote_root}", FAST)
    assert isinstance(store, SshStore)
    sources = files(tmp_path, {"trajectory.xtc": 300_000, "energies.csv": 2_000})
    store.put_directory(sources, "sims/a/r1/segments/0000")
    sums = remote_sums(f"{remote_root}/sims/a/r1/segments/0000")
    assert sums == {name: sha256_file(path) for name, path in sources.items()}
    assert remote(f"ls -A {remote_root}/sims/a/r1/segments").split() == ["0000"], "no partial directory left"
    # a second put of the same segment replaces it as a whole
    (tmp_path / "x").mkdir()
    store.put_directory(files(tmp_path / "x", {"trajectory.xtc": 1000}), "sims/a/r1/segments/0000")
    assert set(remote_sums(f"{remote_root}/sims/a/r1/segments/0000")) == {"trajectory.xtc"}
    back = tmp_path / "back" / "t.xtc"
    store.get([("sims/a/r1/segments/0000/trajectory.xtc", back, sha256_file(tmp_path / "x" / "trajectory.xtc"))])
    assert back.read_bytes() == (tmp_path / "x" / "trajectory.xtc").read_bytes()
    store.pin(sources["energies.csv"], "sims/a/r1/system.xml", sha256_file(sources["energies.csv"]))
    store.pin(sources["energies.csv"], "sims/a/r1/system.xml", sha256_file(sources["energies.csv"]))  # idempotent
    with pytest.raises(TransferError, match="already exists with different content"):
        store.pin(sources["trajectory.xtc"], "sims/a/r1/system.xml", sha256_file(sources["trajectory.xtc"]))


PUT_SCRIPT = """
import sys
from pathlib import Path
from mdcampaign.store import TransferSettings, open_store
store = open_store(sys.argv[1], TransferSettings.of(timeout_seconds=5, retries=4, retry_delay_seconds=6))
store.put_directory({p.name: p for p in Path(sys.argv[2]).iterdir()}, "sims/big/r1/segments/0000")
"""


def test_server_killed_mid_transfer_then_next_run_completes_cleanly(tmp_path, remote_root, ssh_path):
    from mdcampaign.files import sha256_file

    source = tmp_path / "segment"
    source.mkdir()
    sources = files(source, {"trajectory.xtc": 400_000_000, "energies.csv": 10_000})
    env = {**os.environ, "PATH": ssh_path}
    process = subprocess.Popen(
        [sys.executable, "-c", PUT_SCRIPT, f"{HOST}:{remote_root}", str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    partial = f"{remote_root}/sims/big/r1/segments/.0000.partial"
    deadline = time.time() + 60
    while time.time() < deadline and not remote(f"find {partial} -type f -size +1M 2>/dev/null", check=False).strip():
        time.sleep(0.1)
    subprocess.run([str(REPO / "scripts/ci/sshd-down")], check=True, capture_output=True)
    time.sleep(2)
    subprocess.run([str(REPO / "scripts/ci/sshd-up")], check=True, capture_output=True)
    output, _ = process.communicate(timeout=300)
    assert "retrying" in output or process.returncode != 0, output
    if process.returncode != 0:  # gave up: the next run completes it
        rerun = subprocess.run(
            [sys.executable, "-c", PUT_SCRIPT, f"{HOST}:{remote_root}", str(source)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    sums = remote_sums(f"{remote_root}/sims/big/r1/segments/0000")
    assert sums == {name: sha256_file(path) for name, path in sources.items()}, "identical files, nothing extra"
    leftovers = remote(f"find {remote_root} -name '.*' -not -path '*/.' ", check=False).split()
    assert leftovers == [], f"stray partial data: {leftovers}"


def test_permission_denied_is_one_clear_error_without_retries(tmp_path, ssh_path):
    locked = "/srv/mdcampaign-test-readonly"
    Path(locked).mkdir(parents=True, exist_ok=True)
    os.chmod(locked, 0o755)  # owned by root: user mdstore cannot write there
    store = open_store(f"{HOST}:{locked}/store", FAST)
    started = time.time()
    with pytest.raises(TransferError) as caught:
        store.put_directory(files(tmp_path, {"a.txt": 10}), "sims/a/r1/segments/0000")
    message = str(caught.value)
    assert "permission denied on mdstore" in message and f"{locked}/store" in message
    assert "\n" not in message
    assert time.time() - started < FAST.delay, "must not retry"


def test_changed_host_key_is_a_clear_error_without_retries(tmp_path, remote_root, monkeypatch):
    wrong = tmp_path / "bin"
    wrong.mkdir()
    (wrong / "ssh").write_text(
        f"#!/bin/sh\nexec /usr/bin/ssh -F {SSH_DIR / 'ssh_config'} "
        f'-o UserKnownHostsFile={SSH_DIR / "known_hosts.wrong"} "$@"\n'
    )
    (wrong / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrong}:{os.environ['PATH']}")
    store = open_store(f"{HOST}:{remote_root}", FAST)
    started = time.time()
    with pytest.raises(TransferError, match="the host key of mdstore has changed"):
        store.put_directory(files(tmp_path, {"a.txt": 10}), "sims/a/r1/segments/0000")
    assert time.time() - started < FAST.delay, "must not retry"


@pytest.mark.slow
def test_campaign_with_its_store_on_the_ssh_host(tmp_path, remote_root, ssh_path):
    campaign = write_campaign(
        tmp_path / "campaign", store=f"{HOST}:{remote_root}", transfer={"timeout_seconds": 10, "retries": 2}
    )
    snakemake(campaign, env={"PATH": ssh_path})
    sims = {"ala/r1": 0.004, "ala/r2": 0.004, "ala-water/r1": 0.004}
    for sim in sims:
        for record in sorted((campaign / "results/sims" / sim / "segments").glob("*/manifest.json")):
            manifest = json.loads(record.read_text())
            assert manifest["store"] == f"{HOST}:{remote_root}"
            stored = remote_sums(f"{remote_root}/{manifest['path']}")
            assert {n: f["sha256"] for n, f in manifest["files"].items()}.items() <= stored.items()
        assert "analysis.json" in remote(f"ls {remote_root}/sims/{sim}/analysis/0002").split()
    summary = (campaign / "results" / "summary.tsv").read_text()
    assert all(sim in summary for sim in sims)
    # planning needs no SSH: with an ssh that cannot connect, the plan is still complete
    broken = tmp_path / "broken-ssh"
    broken.mkdir()
    (broken / "ssh").write_text("#!/bin/sh\necho 'ssh: connect to host mdstore: Connection refused' >&2\nexit 255\n")
    (broken / "ssh").chmod(0o755)
    plan = snakemake(campaign, "-n", env={"PATH": f"{broken}:{os.environ['PATH']}"})
    assert "Nothing to be done" in plan.stdout + plan.stderr


@pytest.mark.slow
def test_two_sites_with_a_fixed_assignment_share_one_store_and_the_summary_covers_everything(
    tmp_path, remote_root, ssh_path
):
    systems = [
        {"id": "ala", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 3},
        {"id": "ala-b", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1},
    ]
    sites = {
        "alpha": {"scratch": str(tmp_path / "scratch-alpha"), "ns_per_day": 100, "capacity": 2},
        "beta": {"scratch": str(tmp_path / "scratch-beta"), "ns_per_day": 100, "capacity": 2},
    }
    directories = {}
    for site in sites:
        directories[site] = write_campaign(
            tmp_path / f"at-{site}",
            systems=systems,
            store=f"{HOST}:{remote_root}",
            sites=sites,
            site=site,
            pulling={"enabled": False},
        )
    ran = {}
    for site, directory in directories.items():
        snakemake(directory, env={"PATH": ssh_path})
        ran[site] = {
            f"{p.parent.name}/{p.name}" for p in (directory / "results/sims").glob("*/r*") if (p / "segments").exists()
        }
        assert ran[site], f"site {site} got no simulations"
    assert not ran["alpha"] & ran["beta"], "each simulation runs on exactly one site"
    assert ran["alpha"] | ran["beta"] == {"ala/r1", "ala/r2", "ala/r3", "ala-b/r1"}
    result = subprocess.run(
        ["mdcampaign", "summary"],
        cwd=directories["beta"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ssh_path},
    )
    assert result.returncode == 0, result.stderr
    assert "4 simulations, 4 analyzed, 0 pending" in result.stdout
    table = (directories["beta"] / "results" / "campaign_summary.tsv").read_text()
    assert all(sim in table for sim in ("ala/r1", "ala/r2", "ala/r3", "ala-b/r1"))
    assert "campaign_summary.tsv" in remote(f"ls {remote_root}/summary")
    plan = subprocess.run(
        ["mdcampaign", "plan"],
        cwd=directories["alpha"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ssh_path},
    )
    assert plan.returncode == 0 and "alpha:" in plan.stdout and "beta:" in plan.stdout, plan.stderr


# -- the last step of a fetch (verify, rename into place) losing its connection --------


def _processes() -> dict[int, tuple[int, int, list[str]]]:
    """pid -> (parent pid, uid, argv) of every process on this machine (the test server
    is on loopback: its sessions are processes here)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        table[int(entry.name)] = (
            int(fields["PPid"]),
            int(fields["Uid"].split()[0]),
            [arg.decode(errors="replace") for arg in argv],
        )
    return table


def _in_tree(pid: int, root: int, table: dict) -> bool:
    while pid > 1:
        if pid == root:
            return True
        pid = table.get(pid, (0,))[0]
    return False


class ConnectionDropper:
    """Watches the test server for the remote shell of `put_directory`'s last step (its
    script names the segment's partial folder and runs sha256sum). When it appears, the
    connection's sshd (the shell's parent) is stopped: the shell runs on, verifies and
    renames, but its answer is never sent. Once the rename is done on the server, that
    connection's sshd processes are killed, so ssh here exits 255 with the answer lost:
    the previous attempt's rename succeeded but the connection dropped before we heard."""

    def __init__(self, segment: str):
        import pwd
        import threading

        self.segment = segment.rstrip("/")
        self.uid = pwd.getpwnam("mdstore").pw_uid
        self.listener = int((SSH_DIR / "sshd.pid").read_text())
        self.marker = f".{Path(self.segment).name}.partial"
        self.dropped = False
        self.problem = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    def _watch(self):
        import signal

        while not self._stop.is_set():
            table = _processes()
            for pid, (parent, uid, argv) in table.items():
                script = argv[2] if len(argv) > 2 and argv[1] == "-c" else ""
                if uid != self.uid or self.marker not in script or "sha256sum" not in script:
                    continue
                if not _in_tree(pid, self.listener, table):
                    continue
                session = [parent, table.get(parent, (0,))[0]]  # `sshd: mdstore@notty`, `sshd: mdstore [priv]`
                if session[1] == self.listener:
                    session = session[:1]
                os.kill(parent, signal.SIGSTOP)
                deadline = time.time() + 60
                partial = Path(self.segment).parent / self.marker
                while time.time() < deadline and (partial.exists() or not Path(self.segment).is_dir()):
                    time.sleep(0.02)
                if partial.exists():
                    self.problem = "the stopped connection's script did not rename the segment into place"
                for victim in session:
                    os.kill(victim, signal.SIGKILL)
                self.dropped = True
                return
            time.sleep(0.002)


def _drop_and_put(tmp_path: Path, store, relative_dir: str, remote_dir: str, sizes: dict[str, int]):
    """put_directory while a ConnectionDropper watches; tries a few segments, in case the
    watcher missed a (short) last step; returns (the dropper, the sources, the error)."""
    for attempt in range(3):
        source = tmp_path / f"segment-{attempt}"
        source.mkdir(parents=True)
        sources = files(source, sizes)
        segment = f"{relative_dir}/{attempt:04d}"
        with ConnectionDropper(f"{remote_dir}/{segment}") as dropper:
            try:
                store.put_directory(sources, segment)
                error = None
            except TransferError as caught:
                error = caught
        if dropper.dropped:
            assert dropper.problem is None, dropper.problem
            return dropper, sources, segment, error
    pytest.fail("the final step was never seen on the server (too fast to catch?)")


def test_fetch_whose_last_step_loses_the_connection_still_lands_verified(tmp_path, remote_root, caplog):
    """The rename happened but the answer was lost (ssh exit 255): the step is retried,
    finds the partial copy gone and the segment in place with the right checksums, and
    succeeds; nothing is left over."""
    if os.geteuid() != 0:
        pytest.skip("needs to stop and kill the test server's session processes (run as root, like sshd-up)")
    from mdcampaign.files import sha256_file

    caplog.set_level("WARNING", logger="mdcampaign.store")
    store = open_store(f"{HOST}:{remote_root}", FAST)
    _, sources, segment, error = _drop_and_put(
        tmp_path, store, "sims/a/r1/segments", remote_root, {"trajectory.xtc": 64_000_000, "energies.csv": 2_000}
    )
    assert error is None, f"the dropped last step was not retried: {error}"
    retried = [r.getMessage() for r in caplog.records if "moving it into place" in r.getMessage()]
    assert retried and "retrying" in retried[0] and "exit 255" in retried[0], retried
    assert remote_sums(f"{remote_root}/{segment}") == {name: sha256_file(path) for name, path in sources.items()}
    leftovers = remote(f"find {remote_root} -name '.*' -not -path '*/.' ", check=False).split()
    assert leftovers == [], f"stray partial data: {leftovers}"


def test_last_step_failure_without_retries_has_a_reason(tmp_path, remote_root):
    """With no retries left, the dropped last step is an error that says why (exit 255
    and what ssh said, or that it said nothing): never an empty reason."""
    if os.geteuid() != 0:
        pytest.skip("needs to stop and kill the test server's session processes (run as root, like sshd-up)")
    store = open_store(f"{HOST}:{remote_root}", TransferSettings.of(timeout_seconds=5, retries=0))
    _, sources, segment, error = _drop_and_put(
        tmp_path, store, "sims/a/r1/segments", remote_root, {"trajectory.xtc": 64_000_000}
    )
    assert error is not None, "a dropped connection with no retries left must be an error"
    message = str(error)
    assert "moving it into place failed" in message and "exit 255" in message, message
    reason = message.split(" failed", 1)[1].lstrip(":( ").strip()
    assert reason and "\n" not in message, message
    # the rename did happen: running the fetch again completes it
    store.put_directory(sources, segment)
    from mdcampaign.files import sha256_file

    assert remote_sums(f"{remote_root}/{segment}") == {name: sha256_file(path) for name, path in sources.items()}


def test_last_step_is_idempotent_and_refuses_a_copy_it_did_not_send(tmp_path, remote_root):
    from mdcampaign.files import sha256_file

    store = open_store(f"{HOST}:{remote_root}", FAST)
    sources = files(tmp_path, {"trajectory.xtc": 10_000, "energies.csv": 100})
    store.put_directory(sources, "sims/a/r1/segments/0000")
    sums = {name: sha256_file(path) for name, path in sources.items()}
    started = time.time()
    store._finish("sims/a/r1/segments", "0000", sums, stamp=1)  # an answer lost: done again, succeeds
    with pytest.raises(TransferError, match="the copy in place is not the one just sent") as caught:
        store._finish("sims/a/r1/segments", "0000", {**sums, "energies.csv": "0" * 64}, stamp=1)
    assert "(exit 1)" in str(caught.value)
    with pytest.raises(TransferError, match="the copy in place is not the one just sent"):
        store._finish("sims/a/r1/segments", "0000", {"trajectory.xtc": sums["trajectory.xtc"]}, stamp=1)  # extra file
    with pytest.raises(TransferError, match="nothing is in place"):
        store._finish("sims/a/r1/segments", "0001", sums, stamp=1)
    assert time.time() - started < FAST.delay, "a refusal is not retried"
    assert remote_sums(f"{remote_root}/sims/a/r1/segments/0000") == sums


# -- the store's disk fills during a fetch over SSH -------------------------------------


@pytest.fixture
def small_remote_disk(ssh_path):
    """A real 8 MB file system (tmpfs) for the store user, nearly filled; needs root to
    mount it (the store user then owns it)."""
    mount_point = Path(f"/home/mdstore/small-{uuid.uuid4().hex[:8]}")
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small file system for the store user here: {mounted.stderr.strip()}")
    subprocess.run(["chown", "mdstore:mdstore", str(mount_point)], check=True)
    filler = f"{mount_point}/filler"
    free = int(remote(f"df --output=avail -B1 {mount_point} | tail -n 1").strip())
    remote(f"head -c {free - 16 * 1024} /dev/zero > {filler}")
    yield str(mount_point), filler
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
    mount_point.rmdir()


@pytest.mark.slow
def test_a_full_store_disk_over_ssh_is_one_line_and_the_same_command_finishes(tmp_path, small_remote_disk, ssh_path):
    disk, filler = small_remote_disk
    store = f"{disk}/store"
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1}],
        store=f"{HOST}:{store}",
        transfer={"timeout_seconds": 10, "retries": 2},
    )
    failed = snakemake(campaign, check=False, env={"PATH": ssh_path})
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Traceback" not in output
    lines = [line for line in output.splitlines() if "is full (No space left on device)" in line]
    assert lines and f"the store on {HOST} is full (No space left on device) at {HOST}:{store}/" in lines[0], output[
        -3000:
    ]
    assert "partial" not in remote(f"find {store} -name '*partial*'"), "the partial copy is removed"
    assert not list((campaign / "results").rglob("manifest.json")), "nothing recorded as stored"
    remote(f"rm -f {filler}")  # space again
    snakemake(campaign, env={"PATH": ssh_path})
    for record in sorted((campaign / "results/sims/ala/r1/segments").glob("*/manifest.json")):
        manifest = json.loads(record.read_text())
        stored = remote_sums(f"{store}/{manifest['path']}")
        assert {n: f["sha256"] for n, f in manifest["files"].items()}.items() <= stored.items()
    assert len(list((campaign / "results/sims/ala/r1/segments").glob("*/manifest.json"))) == 2
