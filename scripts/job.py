"""Thin entry point of the shell-run rules (stage, simulate, fetch, analyze):

    python scripts/job.py RULE SPEC

The work is done in mdcampaign.jobs.
"""

import sys
from pathlib import Path

try:
    from mdcampaign import jobs
except ModuleNotFoundError:  # a rule's conda environment, without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mdcampaign import jobs

sys.exit(jobs.main())
