rule summary:
    """The campaign table (one row per simulation), each system's statistics over its
    replicas, the campaign figure, and the
    report's figures of the whole workflow and the segments' timelines. Writes only
    its outputs."""
    input:
        summary_inputs,
    output:
        table=report(
            layout.SUMMARY_TABLE, caption="../report/summary.rst", category="Campaign"
        ),
        figure=report(
            layout.SUMMARY_FIGURE, caption="../report/figure.rst", category="Campaign"
        ),
        systems=report(
            layout.SYSTEMS_TABLE, caption="../report/systems.rst", category="Campaign"
        ),
        comparisons=report(
            layout.COMPARISONS_TABLE,
            caption="../report/comparisons.rst",
            category="Comparisons",
        ),
        comparisons_figure=report(
            layout.COMPARISONS_FIGURE,
            caption="../report/comparisons.rst",
            category="Comparisons",
        ),
        per_system=report(
            directory(layout.PER_SYSTEM),
            patterns=["{system}.{figure}.png", "{system}.{figure}.tsv"],
            caption="../report/per_system.rst",
            category="Systems",
            subcategory="{system}",
            labels={"simulation": "{system}, all replicas", "figure": "{figure}"},
        ),
        workflow=report(
            layout.REPORT_WORKFLOW,
            caption="../report/workflow.rst",
            category="Workflow",
        ),
        timelines=report(
            layout.REPORT_TIMELINES,
            caption="../report/timelines.rst",
            category="Workflow",
        ),
    log:
        layout.log_path("summary"),
    localrule: runs_locally("summary")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        simulations=[simulation_identity(sim) for sim in PLAN.summarized],
        analyses=PLAN.summarized_analyses,
        campaign=CAMPAIGN.name,
        # system -> (group, is its reference): the comparisons of a series
        groups={
            s.id: (s.group, s.reference) for s in CAMPAIGN.systems.values() if s.group
        },
        # system -> its goal (continue until converged), where it stands is read when it runs
        goals={
            s.id: goal.record()
            for s in CAMPAIGN.systems.values()
            if (goal := PLAN.goal_of(s.id))
        },
        mode=PLAN.segment_mode,
        timelines=[sim.name for sim in PLAN.summarized[: layout.TIMELINE_SIMULATIONS]],
        # pulling: every site's analyses, from the store
        store=PLAN.job_config if PLAN.pulls else None,
    script:
        "../../scripts/summary.py"
