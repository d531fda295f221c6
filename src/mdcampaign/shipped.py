"""Where the installed package keeps what ships with it: the Snakemake workflow (rules,
schemas, report captions), the machine profiles, the job scripts the rules run and the
example campaign. In a source checkout these are links to the folders at the top of
the repository; in a wheel they are plain folders. The one place that knows."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).parent
WORKFLOW = PACKAGE / "workflow"
SNAKEFILE = WORKFLOW / "Snakefile"
SCHEMAS = WORKFLOW / "schemas"
PROFILES = PACKAGE / "profiles"
JOB_SCRIPT = PACKAGE / "scripts" / "job.py"
EXAMPLE = PACKAGE / "example"
