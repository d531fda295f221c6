"""A site's driver on this machine (`mdcampaign sites start | stop | logs` for a site
without host), its heartbeat in the store, and the campaign definition every site must
share; the same code runs on other machines over SSH (test_sites_remote.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import STRUCTURES, write_campaign
from mdcampaign.campaign import load_campaign
from mdcampaign.configuration import read_config_file
from mdcampaign.definition import campaign_definition, first_difference
from mdcampaign.heartbeat import Beat, site_states


def site_campaign(directory: Path, store: Path, **protocol) -> Path:
    (directory / "structures").mkdir(parents=True, exist_ok=True)
    shutil.copy(STRUCTURES / "alanine-dipeptide.pdb", directory / "structures")
    return write_campaign(
        directory,
        systems=[{"id": "ala", "structure": "structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol=protocol or None,
        store=str(store),
        sites={
            "here": {"ns_per_day": 100, "capacity": 1, "profile": "local"},
            "there": {"ns_per_day": 100, "capacity": 1},
        },
        site="here",
        pulling={"lease_minutes": 0.25, "poll_seconds": 1},
    )


def load(directory: Path):
    config = read_config_file(directory / "config" / "config.yaml")
    return load_campaign(config, "config/config.yaml", base_dir=directory)


def mdcampaign(directory: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mdcampaign", *arguments], cwd=directory, capture_output=True, text=True, timeout=300)


def test_the_definition_names_the_first_key_that_differs_and_ignores_what_sites_set_themselves(tmp_path):
    base = load(site_campaign(tmp_path / "a", tmp_path / "store"))
    raised = load(site_campaign(tmp_path / "b", tmp_path / "store", target_ns=0.01))
    assert first_difference(campaign_definition(base), campaign_definition(base)) is None
    assert first_difference(campaign_definition(raised), campaign_definition(base)) == (
        "systems.ala.protocol.target_ns",
        0.01,
        0.004,
    )
    # what a site may set for itself is not part of it
    other = load(site_campaign(tmp_path / "c", tmp_path / "store"))
    other.site, other.platform, other.max_runtime_minutes = "there", "CUDA", 5
    assert first_difference(campaign_definition(other), campaign_definition(base)) is None


def test_site_states_alive_silent_finished_and_who_start_all_starts():
    campaign = type("C", (), {"sites": {"a": 0, "b": 0, "c": 0, "d": 0, "e": 0}})()
    running = {"state": "running", "interval_s": 2, "host": "login1", "pid": 7, "jobs": {"running": 1, "waiting": 2}}
    states = {
        s.site: s
        for s in site_states(
            campaign,
            {
                "a": Beat("a", 3.0, running),
                "b": Beat("b", 60.0, running),  # missed its beats: killed, or its machine rebooted
                "c": Beat("c", 1.0, {"state": "finished"}),
                "d": Beat("d", 1.0, {"state": "stopped"}),
            },
        )
    }
    assert [states[n].state for n in "abcde"] == ["alive", "silent", "finished", "stopped", "never"]
    assert [n for n in "abcde" if states[n].needs_start] == ["b", "e"]
    assert states["b"].restart == "mdcampaign sites start b" and states["a"].restart is None


@pytest.mark.slow
def test_a_site_started_detached_stops_gracefully_releasing_its_claims_and_starts_again_to_completion(tmp_path):
    store = tmp_path / "store"
    here = site_campaign(tmp_path / "ws", store, segment_ns=0.004, target_ns=0.04)
    started = mdcampaign(here, "sites", "start", "here")
    assert started.returncode == 0 and "site here: driver started (pid" in started.stdout, started.stdout
    pid = int((here / ".mdcampaign" / "driver.pid").read_text())
    again = mdcampaign(here, "sites", "start", "here")
    assert "its driver already runs" in again.stdout, again.stdout

    def beat() -> dict:
        path = store / "sites" / "here.json"
        return json.loads(path.read_text()) if path.exists() else {}

    deadline = time.time() + 240
    while time.time() < deadline and not any(store.glob("claims/*/*/segments-*")):
        time.sleep(0.2)
    assert any(store.glob("claims/*/*/segments-*")), mdcampaign(here, "sites", "logs", "here").stdout
    assert beat()["state"] == "running" and beat()["pid"] == pid
    status = mdcampaign(here, "status", "--no-slurm")
    assert any(line.startswith("here") and "alive" in line for line in status.stdout.splitlines()), status.stdout

    stopped = mdcampaign(here, "sites", "stop", "here")
    assert stopped.returncode == 0 and f"driver (pid {pid}) stop" in stopped.stdout, stopped.stdout
    deadline = time.time() + 120
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.5)
    assert not os.path.exists(f"/proc/{pid}"), "the driver did not end after its running segment"
    assert beat()["state"] == "stopped"
    stored = len(list(store.glob("sims/*/*/segments/[0-9]*")))
    assert 1 <= stored < 20, f"stopped mid-campaign, after whole segments ({stored} of 20 stored)"
    # every claim released, nothing stored beyond whole segments, and status offers the restart
    for claim in store.glob("claims/*/*/[0-9]*"):
        assert (claim / "released").exists() or (claim / "failed").exists(), f"{claim} still held"
    status = mdcampaign(here, "status", "--no-slurm")
    assert "its driver is stopped: restart it with `mdcampaign sites start here`" in status.stdout, status.stdout
    start_all = mdcampaign(here, "sites", "start", "--all")
    assert "site here" not in start_all.stdout, "a site stopped on purpose is not restarted by the keep-alive"
    logs = mdcampaign(here, "sites", "logs", "here")
    assert "mdcampaign sites start" in logs.stdout or "snakemake" in logs.stdout, logs.stdout

    resumed = mdcampaign(here, "sites", "start", "here")
    assert "driver started" in resumed.stdout, resumed.stdout
    deadline = time.time() + 400
    while time.time() < deadline and (beat().get("pid") == pid or beat().get("state") == "running"):
        time.sleep(1)
    assert beat()["state"] == "finished", mdcampaign(here, "sites", "logs", "here").stdout
    for sim in ("ala/r1", "ala/r2"):
        segments = sorted(p.name for p in (store / "sims" / sim / "segments").iterdir() if not p.name.startswith("."))
        assert segments == [f"{k:04d}" for k in range(10)], (sim, segments)


@pytest.mark.parametrize(
    "field, value",
    [
        ("host", "-oProxyCommand=touch /tmp/pwned"),
        ("host", "login1;touch /tmp/pwned"),
        ("path", "-rf"),
        ("path", "$(touch /tmp/pwned)"),
        ("path", "campaigns/x;rm -rf ~"),
        ("python", "-c"),
        ("python", "python3 -c 'import os'"),
        ("profile", "../../etc"),
    ],
)
def test_a_site_field_that_could_act_as_an_option_or_shell_is_refused_in_one_line(tmp_path, field, value):
    from mdcampaign.errors import CampaignError

    directory = site_campaign(tmp_path / "c", tmp_path / "store")
    config = read_config_file(directory / "config" / "config.yaml")
    config["sites"]["there"].update({"host": "login1", "path": "campaigns/x", field: value})
    with pytest.raises(CampaignError) as raised:
        load_campaign(config, "config/config.yaml", base_dir=directory)
    message = str(raised.value)
    assert "\n" not in message and "there" in message and field in message, message


def test_values_put_into_a_site_script_are_quoted_whatever_validation_did():
    """Defence in depth: SiteMachine's scripts quote the folder and the Python even
    when a Site is made without validation."""
    from mdcampaign.sitehost import folder_words
    from mdcampaign.sites import Site

    hostile = "x; touch /tmp/pwned $(id)"
    for path in (hostile, f"$HOME/{hostile}", f"~/{hostile}"):
        site = Site(name="s", ns_per_day=1.0, capacity=1, host="login1", path=path)
        words = folder_words(site)
        result = subprocess.run(["bash", "-c", f'{words}; printf "%s" "$base"'], capture_output=True, text=True)
        assert result.stdout.endswith(hostile) and result.returncode == 0, (path, words, result)
