"""`snakemake --report` of a finished campaign, opened in a real headless browser
(Debian's chromium): it renders, it has every simulation's analysis figure although
finished simulations are not planned, and it shows the whole workflow (every rule)
and the segments' timelines."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile

import pytest

from conftest import STRUCTURES, snakemake, write_campaign

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def rendered_text(html_file) -> str:
    """The report's visible text after its JavaScript ran in headless chromium."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"file://{html_file}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.sub(r"<(script|style|noscript)\b.*?</\1>", "", result.stdout, flags=re.S)
    body = body[body.find("<body") :]
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium; .ci/run installs it)")
def test_the_report_of_a_finished_campaign_renders_with_the_whole_workflow(tmp_path):
    systems = [{"id": "ala", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 2}]
    campaign = write_campaign(tmp_path / "campaign", systems=systems)
    snakemake(campaign)
    for name in ("workflow.png", "timelines.png"):
        assert (campaign / "results" / "report" / name).stat().st_size > 10_000
    snakemake(campaign, "--report", "report.html")
    text = rendered_text(campaign / "report.html")
    assert "Statistics" in text and "Results" in text, f"the report's script did not run: {text[:300]}"
    results = text.split("Results", 1)[-1]
    assert {"Campaign", "Comparisons", "Systems", "Workflow"} <= set(results.split()), text[:500]
    assert "Start under Results" in text, "the landing page says where the answers are"
    raw = (campaign / "report.html").read_text()
    for figure in ("workflow.png", "timelines.png", "summary.png", "systems.tsv", "ala.convergence.png"):
        assert figure in raw
    assert "ala.statistics.tsv" in raw, "the system's page has its statistics table"
    assert raw.count("analysis.png") >= 2, "every simulation's analysis, although none is planned any more"
    # also the zipped form, for reports with many figures
    snakemake(campaign, "--report=report.zip")
    with zipfile.ZipFile(campaign / "report.zip") as archive:
        names = archive.namelist()
    assert any(name.endswith("workflow.png") for name in names) and any(n.endswith("timelines.png") for n in names)
