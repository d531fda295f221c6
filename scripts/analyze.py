"""Thin entry point of the `analyze` rule; the work is done in mdcampaign.jobs."""

import sys
from pathlib import Path

try:
    from mdcampaign import jobs
except ModuleNotFoundError:  # a rule's conda environment, without the package installed
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821
    from mdcampaign import jobs

jobs.analyze(snakemake)  # noqa: F821 - provided by Snakemake
