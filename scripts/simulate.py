"""Thin entry point of the `simulate` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.simulate(snakemake)  # noqa: F821 - provided by Snakemake
