"""Thin entry point of the `summary` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.summary(snakemake)  # noqa: F821 - provided by Snakemake
