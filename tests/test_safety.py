"""User-supplied values never reach a shell unquoted; no secrets or disabled host-key
checks ship with the project."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, STRUCTURES, assert_complete, snakemake, write_campaign

METACHARACTERS = "a b;$(touch {marker})`touch {marker}`|&'\""


@pytest.mark.slow
def test_shell_metacharacters_in_every_path_are_never_executed(tmp_path):
    marker = f"pwned-{uuid.uuid4().hex[:6]}"  # a shell would create it in its working directory
    nasty = METACHARACTERS.format(marker=marker)
    campaign_dir = tmp_path / f"campaign {nasty}"
    structure = campaign_dir / f"structure {nasty}.pdb"
    campaign = write_campaign(
        campaign_dir,
        systems=[{"id": "ala", "structure": structure.name, "replicas": 1}],
        scratch=f"scratch {nasty}",
        store=f"store {nasty}",
    )
    shutil.copy(STRUCTURES / "alanine-dipeptide.pdb", structure)
    snakemake(campaign)
    assert not [p for p in tmp_path.rglob(marker)] and not Path(marker).exists(), "a value was executed by a shell"
    assert_complete(campaign, {"ala/r1": 0.004}, store=campaign / f"store {nasty}")


def test_no_secrets_and_no_disabled_host_key_checks_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    forbidden = (
        "StrictHostKeyChecking=no",
        "StrictHostKeyChecking no",
        "UserKnownHostsFile=/dev/null",
        "BEGIN OPENSSH PRIVATE KEY",
        "BEGIN RSA PRIVATE KEY",
        "BEGIN EC PRIVATE KEY",
    )
    offenders = []
    for name in tracked:
        path = REPO / name
        if not path.is_file() or name.startswith("tests/"):
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {needle}" for needle in forbidden if needle in text]
    assert offenders == []


def test_remote_paths_with_metacharacters_stay_literal(tmp_path, monkeypatch):
    from test_ssh import HOST, SSH_BIN, STORE_ROOT, remote, server_problem

    if server_problem():
        pytest.skip(server_problem())
    monkeypatch.setenv("PATH", f"{SSH_BIN}:{os.environ['PATH']}")
    from mdcampaign.store import TransferSettings, open_store

    marker = f"pwned-remote-{uuid.uuid4().hex[:6]}"
    root = f"{STORE_ROOT}/safety-{uuid.uuid4().hex[:6]}"
    nasty = METACHARACTERS.format(marker=marker)
    store = open_store(f"{HOST}:{root}/{nasty}", TransferSettings.of(timeout_seconds=5, retries=0))
    source = tmp_path / "data.txt"
    source.write_text("x")
    try:
        store.put_directory({"data.txt": source}, f"sims/{nasty}/r1/segments/0000")
        back = tmp_path / "back.txt"
        from mdcampaign.files import sha256_file

        store.get([(f"sims/{nasty}/r1/segments/0000/data.txt", back, sha256_file(source))])
        assert back.read_text() == "x"
        found = remote(f"find {root} /home/mdstore -maxdepth 1 -name {marker}", check=False).strip()
        assert not found and not Path(marker).exists(), "a remote path was executed by a shell"
    finally:
        remote(f"rm -rf {root}", check=False)


# -- option injection: paths and hosts that look like options ------------------------


def _ssh_server(monkeypatch):
    from test_ssh import SSH_BIN, server_problem

    problem = server_problem()
    if problem:
        pytest.skip(problem)
    monkeypatch.setenv("PATH", f"{SSH_BIN}:{os.environ['PATH']}")


def _canaries(name: str, *local: Path) -> list[str]:
    """Where a canary called ``name`` turned up: here (the given folders, searched
    down) or on the store host (its home and the store, a few levels down)."""
    from test_ssh import remote

    found = [
        str(p)
        for folder in local
        for p in Path(folder).rglob(f"*{name}*")
        if name in p.name and not p.name.startswith("--rsync-path")
    ]
    found += remote(
        f"find ~ /home/mdstore/store -maxdepth 4 -name {shlex.quote('*' + name + '*')} "
        f"! -name {shlex.quote('--rsync-path*')} ! -name {shlex.quote('-*')}",
        check=False,
    ).split("\n")
    return [f for f in found if f.strip()]


def test_local_paths_that_look_like_rsync_options_are_only_paths(tmp_path, monkeypatch):
    """A scratch or cache folder named ``--rsync-path=touch CANARY;true`` (relative, in
    the working directory) reaches rsync as a path, never as an option: the canary
    never appears, here or on the store host, and every copy works."""
    _ssh_server(monkeypatch)
    from mdcampaign.files import sha256_file
    from mdcampaign.store import TransferSettings, open_store
    from test_ssh import HOST, STORE_ROOT, remote

    canary = f"CANARY-{uuid.uuid4().hex[:8]}"
    evil = Path(f"--rsync-path=touch {canary};true")
    monkeypatch.chdir(tmp_path)
    root = f"{STORE_ROOT}/safety-{uuid.uuid4().hex[:6]}"
    try:
        # the detector works: without `--` rsync takes the folder for an option and
        # runs the command on the store host (a canary there proves it; removed again)
        evil.mkdir()
        (evil / "data.txt").write_text("x")
        subprocess.run(
            ["rsync", "-a", str(evil / "data.txt"), f"{HOST}:{root}-probe/"], capture_output=True, timeout=60
        )
        assert _canaries(canary, tmp_path), "the canary detector does not work"
        remote(f"rm -f ~/{canary} && rm -rf {root}-probe", check=False)
        assert not _canaries(canary, tmp_path)

        store = open_store(f"{HOST}:{root}", TransferSettings.of(timeout_seconds=5, retries=0))
        source = evil / "data.txt"
        sha = sha256_file(source)
        store.put_directory({"data.txt": source}, "sims/a/r1/segments/0000")
        store.put_directory({"data.txt": source}, "sims/a/r1/segments/0001")
        store.pin(source, "sims/a/r1/system.xml", sha)
        store.get(
            [
                ("sims/a/r1/segments/0000/data.txt", evil / "back" / "data.txt", sha),
                ("sims/a/r1/system.xml", evil / "back" / "system.xml", sha),
            ]
        )
        store.get(
            [
                ("sims/a/r1/segments/0000/data.txt", evil / "one" / "data.txt", sha),  # same names: one by one
                ("sims/a/r1/segments/0001/data.txt", evil / "two" / "data.txt", sha),
            ]
        )
        copy = store.local_copy("sims/a/r1/segments/0000", evil / "cache", {"data.txt": sha})
        collected = store.collect("sims", "data.txt", evil / "collected")
        for path in (
            evil / "back" / "data.txt",
            evil / "back" / "system.xml",
            evil / "one" / "data.txt",
            evil / "two" / "data.txt",
            copy / "data.txt",
            collected / "a/r1/segments/0001/data.txt",
        ):
            assert path.read_text() == "x", path
        assert remote(f"cat {root}/sims/a/r1/segments/0000/data.txt") == "x"
        assert not _canaries(canary, tmp_path), "a local path was read as an rsync option"
    finally:
        remote(f"rm -rf {root} {root}-probe; rm -f ~/{canary}", check=False)


HOSTILE_HOSTS = [
    "-oProxyCommand=touch {canary}",
    "-oProxyCommand=touch${{IFS}}{canary}",
    "user@-oProxyCommand=touch${{IFS}}{canary}",
    "host;touch {canary}",
    "$(touch {canary})",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_store_host_that_looks_like_an_option_is_refused_and_never_run(host, tmp_path, monkeypatch):
    """``-oProxyCommand=...:/x`` as the store: check_location names it, open_store and
    SshStore refuse it, doctor fails it; ssh never sees it (its ProxyCommand would make
    the canary here)."""
    from mdcampaign.doctor import FAIL, check_store
    from mdcampaign.errors import TransferError
    from mdcampaign.locations import check_location, is_remote
    from mdcampaign.store import SshStore, TransferSettings, open_store

    canary = f"CANARY-{uuid.uuid4().hex[:8]}"
    host = host.format(canary=canary)
    store = f"{host}:/x"
    monkeypatch.chdir(tmp_path)
    if host.startswith("-oProxyCommand=touch${IFS}"):  # the detector works: this is what ssh would do with it
        subprocess.run(["ssh", "-o", "BatchMode=yes", host, "true"], capture_output=True, timeout=60)
        assert (tmp_path / canary).exists(), "the canary detector does not work"
        (tmp_path / canary).unlink()
    problem = check_location(store)
    assert problem == (
        f"names host '{host}', which is not a host name (letters, digits, '.', '-' and '_', "
        "optionally user@ before it; not starting with '-'); a local folder with ':' in its name is "
        "written ./NAME"
    )
    assert is_remote(store)
    with pytest.raises(TransferError, match="which is not a host name"):
        open_store(store, TransferSettings.of(timeout_seconds=5, retries=0))
    with pytest.raises(TransferError, match="is not a host name"):
        SshStore(host, "/x", TransferSettings.of(timeout_seconds=5, retries=0))
    checks = check_store(SimpleNamespace(store=store, config_file="config/config.yaml"), tmp_path)
    assert [c.status for c in checks] == [FAIL] and "which is not a host name" in checks[0].what, checks
    assert checks[0].fix
    assert not list(tmp_path.rglob(f"*{canary}*")) and not Path(canary).exists(), "a host was run as an option"


@pytest.mark.parametrize("root", ["-store-{id}", "~/--rsync-path=touch {canary};true-{id}", "--help-{id}"])
def test_a_remote_store_path_starting_with_a_dash_is_only_a_path(root, tmp_path, monkeypatch):
    """A relative remote store path (relative to the remote home, like ``~/x``) that
    starts with '-' works as a path: never an option to mkdir, mv, sha256sum, test,
    rm or rsync on the store host."""
    _ssh_server(monkeypatch)
    from mdcampaign.files import sha256_file
    from mdcampaign.locations import check_location
    from mdcampaign.store import SshStore, TransferSettings, open_store
    from test_ssh import HOST, remote

    canary = f"CANARY-{uuid.uuid4().hex[:8]}"
    root = root.format(canary=canary, id=uuid.uuid4().hex[:6])
    name = root.removeprefix("~/")
    monkeypatch.chdir(tmp_path)
    assert check_location(f"{HOST}:{root}") is None
    store = open_store(f"{HOST}:{root}", TransferSettings.of(timeout_seconds=5, retries=0))
    assert isinstance(store, SshStore) and store.describe() == f"{HOST}:./{name}"
    source = tmp_path / "data.txt"
    source.write_text("x")
    sha = sha256_file(source)
    try:
        assert store.collect("sims", "data.txt", tmp_path / "nothing-yet") == tmp_path / "nothing-yet"
        store.put_directory({"data.txt": source}, "sims/a/r1/segments/0000")
        store.put_directory({"data.txt": source}, "sims/a/r1/segments/0000")  # replaces the first copy
        store.pin(source, "sims/a/r1/system.xml", sha)
        store.pin(source, "sims/a/r1/system.xml", sha)
        store.get([("sims/a/r1/segments/0000/data.txt", tmp_path / "back" / "data.txt", sha)])
        assert (tmp_path / "back" / "data.txt").read_text() == "x"
        copy = store.local_copy("sims/a/r1/segments/0000", tmp_path / "cache", {"data.txt": sha})
        assert (copy / "data.txt").read_text() == "x"
        collected = store.collect("sims", "data.txt", tmp_path / "collected")
        assert (collected / "a/r1/segments/0000/data.txt").read_text() == "x"
        listing = remote(f"cd ~ && find ./{shlex.quote(name)} | sort").split("\n")
        assert f"./{name}/sims/a/r1/segments/0000/data.txt" in listing and f"./{name}/sims/a/r1/system.xml" in listing
        assert not [line for line in listing if "partial" in line or "replaced" in line], listing
        assert not _canaries(canary, tmp_path), "a remote path was read as an option"
    finally:
        remote(f"cd ~ && rm -rf -- ./{shlex.quote(name)}", check=False)


def test_hostile_site_and_holder_names_never_run_in_the_store_scripts(tmp_path, monkeypatch):
    """Defence in depth: the config's name check stands before these, but every value a
    claim script is given is quoted (or refused where it would name another folder)."""
    from mdcampaign.claims import ClaimBoard
    from mdcampaign.store import LocalStore

    monkeypatch.chdir(tmp_path)
    marker = f"pwned-{uuid.uuid4().hex[:6]}"
    site = METACHARACTERS.format(marker=marker)
    holder = f"{site}+host-1.s0"
    store = tmp_path / "store"
    board = ClaimBoard(LocalStore(store), 600)
    claimed = board.claim("sys/r1", 2, holder, info=f"$(touch {marker})", site=site, dead=(holder + "x",))
    assert claimed.outcome == "claimed"
    lease = claimed.lease
    assert board.renew([lease]) == set()
    assert board.published(lease, 1, site, ns_per_day=12.5)
    assert board.published(lease, 1, site, analyzed=True)
    listing = board.listing().of("sys/r1")
    assert listing.holder == holder and listing.origin == site and listing.speeds == {site: 12.5}
    board.release(lease)
    assert board.listing().of("sys/r1").ended == "released"
    assert not list(tmp_path.rglob(marker)) and not (Path.cwd() / marker).exists(), "a name was executed by a shell"
    for bad in ("../../escape", "a\nb"):
        with pytest.raises(ValueError, match="cannot be part of a file name"):
            board.claim("sys/r2", 2, f"{bad}+host", site=bad)
    assert not (tmp_path / "escape").exists() and not list(store.rglob("*escape*"))
