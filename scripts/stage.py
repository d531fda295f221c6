"""Thin entry point of the `stage` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.stage(snakemake)  # noqa: F821 - provided by Snakemake
