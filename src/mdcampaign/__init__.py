"""mdcampaign: campaigns of molecular-dynamics simulations as a Snakemake workflow."""

__version__ = "0.1.0"
