rule summary:
    """The campaign table (one row per simulation) and the campaign figure."""
    input:
        unfinished_analyses,
    output:
        table=report(
            layout.SUMMARY_TABLE, caption="../report/summary.rst", category="Campaign"
        ),
        figure=report(
            layout.SUMMARY_FIGURE, caption="../report/figure.rst", category="Campaign"
        ),
    log:
        layout.log_path("summary"),
    localrule: runs_locally("summary")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        simulations=[simulation_identity(sim) for sim in SIMULATIONS],
        analyses=ANALYSIS_FILES,
        campaign=CAMPAIGN.name,
    script:
        "../../scripts/summary.py"
