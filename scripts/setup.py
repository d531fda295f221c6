"""Thin entry point of the `setup` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.setup(snakemake)  # noqa: F821 - provided by Snakemake
