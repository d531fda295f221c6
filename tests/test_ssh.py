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

FAST = TransferSettings(timeout_seconds=5, retries=3, retry_delay_seconds=6)


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
    from mdcampaign.engine import sha256_file

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
store = open_store(sys.argv[1], TransferSettings(timeout_seconds=5, retries=4, retry_delay_seconds=6))
store.put_directory({p.name: p for p in Path(sys.argv[2]).iterdir()}, "sims/big/r1/segments/0000")
"""


def test_server_killed_mid_transfer_then_next_run_completes_cleanly(tmp_path, remote_root, ssh_path):
    from mdcampaign.engine import sha256_file

    source = tmp_path / "segment"
    source.mkdir()
    sources = files(source, {"trajectory.xtc": 400_000_000, "energies.csv": 10_000})
    env = {**os.environ, "PATH": ssh_path}
    process = subprocess.Popen([sys.executable, "-c", PUT_SCRIPT, f"{HOST}:{remote_root}", str(source)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
        rerun = subprocess.run([sys.executable, "-c", PUT_SCRIPT, f"{HOST}:{remote_root}", str(source)],
                               capture_output=True, text=True, env=env, timeout=300)
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
        f"-o UserKnownHostsFile={SSH_DIR / 'known_hosts.wrong'} \"$@\"\n"
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
    campaign = write_campaign(tmp_path / "campaign", store=f"{HOST}:{remote_root}",
                              transfer={"timeout_seconds": 10, "retries": 2})
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
def test_two_sites_share_one_store_and_the_summary_covers_everything(tmp_path, remote_root, ssh_path):
    systems = [
        {"id": "ala", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 3},
        {"id": "ala-b", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1},
    ]
    sites = {"alpha": {"scratch": str(tmp_path / "scratch-alpha"), "ns_per_day": 100, "capacity": 2},
             "beta": {"scratch": str(tmp_path / "scratch-beta"), "ns_per_day": 100, "capacity": 2}}
    directories = {}
    for site in sites:
        directories[site] = write_campaign(tmp_path / f"at-{site}", systems=systems, store=f"{HOST}:{remote_root}",
                                           sites=sites, site=site)
    ran = {}
    for site, directory in directories.items():
        snakemake(directory, env={"PATH": ssh_path})
        ran[site] = {f"{p.parent.name}/{p.name}" for p in (directory / "results/sims").glob("*/r*")
                     if (p / "segments").exists()}
        assert ran[site], f"site {site} got no simulations"
    assert not ran["alpha"] & ran["beta"], "each simulation runs on exactly one site"
    assert ran["alpha"] | ran["beta"] == {"ala/r1", "ala/r2", "ala/r3", "ala-b/r1"}
    result = subprocess.run(["mdcampaign", "summary"], cwd=directories["beta"], capture_output=True, text=True,
                            env={**os.environ, "PATH": ssh_path})
    assert result.returncode == 0, result.stderr
    assert "4 simulations, 4 analyzed, 0 pending" in result.stdout
    table = (directories["beta"] / "results" / "campaign_summary.tsv").read_text()
    assert all(sim in table for sim in ("ala/r1", "ala/r2", "ala/r3", "ala-b/r1"))
    assert "campaign_summary.tsv" in remote(f"ls {remote_root}/summary")
    plan = subprocess.run(["mdcampaign", "plan"], cwd=directories["alpha"], capture_output=True, text=True,
                          env={**os.environ, "PATH": ssh_path})
    assert plan.returncode == 0 and "alpha:" in plan.stdout and "beta:" in plan.stdout, plan.stderr
