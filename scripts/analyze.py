"""Thin entry point of the `analyze` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.analyze(snakemake)  # noqa: F821 - provided by Snakemake
