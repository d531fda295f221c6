"""User-supplied values never reach a shell unquoted; no secrets or disabled host-key
checks ship with the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

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
    forbidden = ("StrictHostKeyChecking=no", "StrictHostKeyChecking no", "UserKnownHostsFile=/dev/null",
                 "BEGIN OPENSSH PRIVATE KEY", "BEGIN RSA PRIVATE KEY", "BEGIN EC PRIVATE KEY")
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
    store = open_store(f"{HOST}:{root}/{nasty}", TransferSettings(timeout_seconds=5, retries=0))
    source = tmp_path / "data.txt"
    source.write_text("x")
    try:
        store.put_directory({"data.txt": source}, f"sims/{nasty}/r1/segments/0000")
        back = tmp_path / "back.txt"
        from mdcampaign.engine import sha256_file

        store.get([(f"sims/{nasty}/r1/segments/0000/data.txt", back, sha256_file(source))])
        assert back.read_text() == "x"
        found = remote(f"find {root} /home/mdstore -maxdepth 1 -name {marker}", check=False).strip()
        assert not found and not Path(marker).exists(), "a remote path was executed by a shell"
    finally:
        remote(f"rm -rf {root}", check=False)
