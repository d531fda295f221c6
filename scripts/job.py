"""Thin entry point of the shell-run rules (stage, simulate, fetch, analyze):

    python scripts/job.py RULE SPEC

The work is done in mdcampaign.jobs.
"""

import sys
from pathlib import Path

try:
    from mdcampaign import jobs
except ModuleNotFoundError:  # a rule's conda environment, without the package installed
    # the package next to this script: a source checkout's src/, or the installed package's parent
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent / "src" if (here.parent / "src").is_dir() else here.parents[1]))
    from mdcampaign import jobs

sys.exit(jobs.main())
