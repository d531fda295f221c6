"""Where the store and scratch are: `store.check_location` (what validation calls) and
`mdcampaign doctor`'s store and scratch checks, on real folders and, for remote
stores, the test SSH server (skipped, with the reason, when it is not running)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mdcampaign.doctor import FAIL, PASS, check_space, check_store
from mdcampaign.errors import TransferError
from mdcampaign.locations import check_location, is_remote
from mdcampaign.store import LocalStore, SshStore, open_store

CONFIG = "config/config.yaml"


def campaign(store: str = "store", scratch: str = "scratch", site: str | None = None, site_scratch: str | None = None):
    """What doctor reads of a campaign (store and scratch already expanded)."""
    sites = {site: SimpleNamespace(scratch=site_scratch)} if site else {}
    return SimpleNamespace(
        store=store,
        scratch=scratch,
        scratch_here=site_scratch or scratch,
        sites=sites,
        site=site,
        config_file=CONFIG,
        simulations=[],
        systems={},
        share=[],
    )


# -- check_location ------------------------------------------------------------------

NOT_A_HOST = (
    "which is not a host name (letters, digits, '.', '-' and '_', optionally user@ before it; not "
    "starting with '-'); a local folder with ':' in its name is written ./NAME"
)


@pytest.mark.parametrize(
    "store, problem",
    [
        ("x:", "names host 'x' but no path after ':' (write x:/path/to/store)"),
        ("me@cluster.edu:", "names host 'me@cluster.edu' but no path after ':' (write me@cluster.edu:/path/to/store)"),
        ("-oProxyCommand=touch C:/x", f"names host '-oProxyCommand=touch C', {NOT_A_HOST}"),
        ("me@-x:/store", f"names host 'me@-x', {NOT_A_HOST}"),
        (
            "host:$SCRATCH/store",
            "has a variable in its path on host, which cannot be expanded from here: write the path "
            "in full (`ssh host 'echo $SCRATCH/store'` shows it)",
        ),
        (
            "host:/work/${USER}/store",
            "has a variable in its path on host, which cannot be expanded from here: write the "
            "path in full (`ssh host 'echo /work/${USER}/store'` shows it)",
        ),
        (
            "host:~alice/store",
            "starts its path on host with '~alice', which cannot be expanded from here: write the path "
            "in full (`ssh host 'echo ~alice'` shows it)",
        ),
    ],
)
def test_check_location_names_what_is_wrong(store, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_location(store) == problem
    assert is_remote(store)
    with pytest.raises(TransferError) as caught:  # never made into a local folder, never contacted
        open_store(store)
    assert str(caught.value) == f"store '{store}' {problem}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "store, root",
    [
        ("host:/data/store", "/data/store"),
        ("me@host.example.org:/data/store/", "/data/store"),
        ("host:store", "store"),
        ("host:~/store", "store"),
        ("host:~", "."),
        ("host:-x", "./-x"),
        ("host:~/-x", "./-x"),
        ("host:/", "/"),
    ],
)
def test_good_remote_locations(store, root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_location(store) is None and is_remote(store)
    opened = open_store(store)
    assert isinstance(opened, SshStore) and opened.root == root


def test_local_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    is_a_file = "is a file, not a folder (give the folder that holds the campaign's results)"
    assert check_location(str(tmp_path / "a-file")) == is_a_file
    assert check_location("a-file") == is_a_file
    assert check_location("a-file", base_dir=tmp_path / "elsewhere") is None  # relative to the campaign
    with pytest.raises(TransferError, match="is a file, not a folder"):
        open_store("a-file")
    for fine in ("store", str(tmp_path / "new" / "store"), "./odd:name", str(tmp_path / "odd:name")):
        assert check_location(fine) is None and not is_remote(fine)
        assert isinstance(open_store(fine), LocalStore)
    (tmp_path / "was:made").mkdir()  # an existing local folder of that form stays local
    assert check_location("was:made") is None and not is_remote("was:made")


# -- doctor: the store ---------------------------------------------------------------


def test_doctor_store_that_is_a_file_fails_with_the_fix(tmp_path):
    (tmp_path / "store").write_text("not a folder")
    for store in ("store", str(tmp_path / "store")):
        [check] = check_store(campaign(store=store), tmp_path)
        assert check.status == FAIL and "is a file, not a folder" in check.what, check.line()
        assert CONFIG in check.fix


def test_doctor_store_host_without_a_path_fails_without_ssh(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-ssh-here"))  # ssh cannot even be found
    [check] = check_store(campaign(store="cluster:"), tmp_path)
    assert check.status == FAIL, check.line()
    assert check.what == "store 'cluster:' names host 'cluster' but no path after ':' (write cluster:/path/to/store)"
    assert CONFIG in check.fix
    assert not (tmp_path / "cluster:").exists()


def test_doctor_store_inside_a_file_cannot_be_created(tmp_path):
    (tmp_path / "blocker").write_text("x")
    [check] = check_store(campaign(store="blocker/store"), tmp_path)
    assert check.status == FAIL and f"cannot be created: {tmp_path / 'blocker'} is a file" in check.what


def test_doctor_passes_a_writable_or_creatable_store_and_leaves_nothing(tmp_path):
    (tmp_path / "store").mkdir()
    for store in ("store", "new/deeper/store"):
        [check] = check_store(campaign(store=store), tmp_path)
        assert check.status == PASS, check.line()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["store"], "the probe is removed"


def _unprivileged(code: str) -> list[dict]:
    """Run doctor checks in a process that obeys file permissions (as root: without
    CAP_DAC_OVERRIDE, which would let it write anywhere); the checks as JSON."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv is needed to drop root's permission override")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


RUN_CHECK = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from mdcampaign.doctor import check_space, check_store
kind, store, scratch, site, site_scratch, directory = json.loads(sys.argv[1])
sites = {site: SimpleNamespace(scratch=site_scratch)} if site else {}
campaign = SimpleNamespace(store=store, scratch=scratch, scratch_here=site_scratch or scratch, sites=sites, site=site,
                           config_file="config/config.yaml", simulations=[], systems={}, share=[])
checks = check_store(campaign, Path(directory)) if kind == "store" else check_space(campaign, Path(directory), {})
print(json.dumps([{"status": c.status, "what": c.what, "fix": c.fix} for c in checks]))
"""


def _check(kind: str, directory: Path, store="store", scratch="scratch", site=None, site_scratch=None) -> list[dict]:
    args = json.dumps([kind, store, scratch, site, site_scratch, str(directory)])
    return _unprivileged(RUN_CHECK.replace("sys.argv[1]", repr(args)))


@pytest.fixture
def locked(tmp_path):
    """A folder nobody may write in (mode 0555), inside tmp_path."""
    folder = tmp_path / "locked"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o555)
    yield folder
    os.chmod(folder, 0o755)


def test_doctor_unwritable_store_fails_with_the_fix(tmp_path, locked):
    [check] = _check("store", tmp_path, store=str(locked))
    assert check["status"] == FAIL and f"{locked} is not writable" in check["what"], check
    assert "chmod u+w" in check["fix"] and CONFIG in check["fix"]
    [check] = _check("store", tmp_path, store="locked/store")  # would have to be made in the locked folder
    assert check["status"] == FAIL and f"cannot be created: {locked} is not writable" in check["what"], check
    assert "mkdir -p" in check["fix"]
    assert list(locked.iterdir()) == []


# -- doctor: scratch -----------------------------------------------------------------


def test_doctor_scratch_that_cannot_be_used_fails_with_the_fix(tmp_path, locked):
    (tmp_path / "scratch-file").write_text("x")
    checks = check_space(campaign(scratch="scratch-file"), tmp_path, {})
    assert checks[0].status == FAIL and "scratch" in checks[0].what and "is a file" in checks[0].what
    assert "`scratch`" in checks[0].fix and CONFIG in checks[0].fix
    checks = check_space(campaign(scratch="scratch-file/sub"), tmp_path, {})
    assert checks[0].status == FAIL and "cannot be created" in checks[0].what
    first = _check("space", tmp_path, scratch=str(locked))[0]
    assert first["status"] == FAIL and f"scratch {locked} is not writable" in first["what"], first
    first = _check("space", tmp_path, scratch="locked/deeper/scratch")[0]
    assert first["status"] == FAIL and f"cannot be created: {locked} is not writable" in first["what"], first


def test_doctor_checks_the_sites_own_scratch(tmp_path, locked):
    (tmp_path / "fine").mkdir()
    first = _check("space", tmp_path, scratch="fine", site="alpha", site_scratch=str(locked / "scratch"))[0]
    assert first["status"] == FAIL and first["what"].startswith("scratch of site alpha "), first
    assert "`sites: alpha: scratch`" in first["fix"], first
    checks = check_space(campaign(scratch=str(locked), site="alpha", site_scratch=str(tmp_path / "fine")), tmp_path, {})
    assert checks[0].status == PASS and "scratch of site alpha" in checks[0].what, checks[0].line()


def test_doctor_passes_a_usable_scratch(tmp_path):
    checks = check_space(campaign(scratch="scratch"), tmp_path, {})
    assert [c.status for c in checks] == [PASS, PASS], [c.line() for c in checks]
    assert not (tmp_path / "scratch").exists(), "doctor changes nothing"


# -- doctor: a remote store on the test SSH server -----------------------------------


def test_doctor_remote_store_reachable_writable_and_not(tmp_path, monkeypatch):
    from test_ssh import HOST, SSH_BIN, STORE_ROOT, remote, server_problem

    if server_problem():
        pytest.skip(server_problem())
    monkeypatch.setenv("PATH", f"{SSH_BIN}:{os.environ['PATH']}")
    [check] = check_store(campaign(store=f"{HOST}:{STORE_ROOT}"), tmp_path)
    assert check.status == PASS and "reachable and writable" in check.what, check.line()
    locked = "/srv/mdcampaign-test-readonly"
    Path(locked).mkdir(parents=True, exist_ok=True)
    os.chmod(locked, 0o755)  # owned by root: user mdstore cannot write there
    [check] = check_store(campaign(store=f"{HOST}:{locked}/store"), tmp_path)
    assert check.status == FAIL and "is not writable" in check.what and "Permission denied" in check.what, check.line()
    assert f"{locked}/store" in check.fix
    remote("rm -rf ./-doctor-probe", check=False)
    [check] = check_store(campaign(store=f"{HOST}:~/-doctor-probe"), tmp_path)  # a path, never an option
    assert check.status == PASS, check.line()
    assert remote("cd ~ && ls -d ./-doctor-probe").strip() == "./-doctor-probe"
    remote("rm -rf ./-doctor-probe", check=False)
