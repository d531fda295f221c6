"""Thin entry point of the `summary` rule; the work is done in mdcampaign.jobs."""

import sys
from pathlib import Path

try:
    from mdcampaign import jobs
except ModuleNotFoundError:  # a rule's conda environment, without the package installed
    # the package next to this script: a source checkout's src/, or the installed package's parent
    here = Path(snakemake.scriptdir).resolve()  # noqa: F821 - Snakemake runs a copy of this file
    sys.path.insert(0, str(here.parent / "src" if (here.parent / "src").is_dir() else here.parents[1]))
    from mdcampaign import jobs

jobs.summary(snakemake)  # noqa: F821 - provided by Snakemake
