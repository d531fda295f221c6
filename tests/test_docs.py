"""The documentation cannot rot: the configuration reference is what the schemas say
(generated from them), every schema key is described, the documentation site builds
with MkDocs in strict mode (every page in the navigation, every link resolving), and
the README stays a short entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from mdcampaign.reference import MAP_FILE, REFERENCE_FILE, _rows, reference, repository_map
from mdcampaign.validation import load_schema


def test_the_configuration_reference_and_the_repository_map_are_generated():
    assert (REPO / REFERENCE_FILE).read_text() == reference(), "run python -m mdcampaign.reference"
    assert (REPO / MAP_FILE).read_text() == repository_map(REPO / "src" / "mdcampaign")
    checked = subprocess.run(
        [sys.executable, "-m", "mdcampaign.reference", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("schema", ["config.schema.yaml", "systems.schema.yaml"])
def test_every_key_is_described_in_the_schema(schema):
    rows = _rows(load_schema(schema)["properties"])
    undescribed = [name for name, subschema in rows if not subschema.get("description", "").strip()]
    assert undescribed == []


def test_the_documentation_site_builds_strictly(tmp_path):
    if shutil.which("mkdocs") is None and not (REPO / ".venv" / "bin" / "mkdocs").exists():
        pytest.skip("MkDocs is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_the_readme_is_a_short_entry_point_that_links_every_guide():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    for page in sorted((REPO / "docs").rglob("*.md")):
        relative = page.relative_to(REPO)
        if relative.name in ("index.md", "configuration.md"):
            continue
        assert str(relative) in readme, f"the README does not point to {relative}"
