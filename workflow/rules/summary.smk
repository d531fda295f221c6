rule summary:
    """The campaign table (one row per simulation) and the campaign figure."""
    input:
        analyses=analyses,
    output:
        table=report(
            layout.SUMMARY_TABLE, caption="../report/summary.rst", category="Campaign"
        ),
        figure=report(
            layout.SUMMARY_FIGURE, caption="../report/figure.rst", category="Campaign"
        ),
    log:
        "logs/summary.log",
    localrule: runs_locally("summary")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        simulations=[simulation_identity(sim) for sim in SIMULATIONS],
        campaign=CAMPAIGN.name,
    script:
        "../../scripts/summary.py"
