"""Thin entry point of the `fetch` rule; the work is done in mdcampaign.jobs."""

from mdcampaign import jobs

jobs.fetch(snakemake)  # noqa: F821 - provided by Snakemake
