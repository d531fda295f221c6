rule analyze:
    """RMSD, radius of gyration, RMSF and secondary structure over all segments.

    Also the decision to continue a simulation: its input function asks for the next
    missing segment through the `fetch` checkpoint, so Snakemake plans one segment per
    unfinished simulation and re-evaluates this each time a segment is fetched; the
    output folder is named after the segment count, so raising the target asks again.
    """
    input:
        segment_records,
    # Also writes the per-frame tables (rmsd.csv, rg.csv, rmsf.csv, dssp.csv: for
    # people, not rules), a copy in the store (which may be remote), and
    # the completion record (layout.COMPLETION_RECORD), a file no rule makes, so that
    # a finished simulation is not an input of the summary at all.
    output:
        json=f"{layout.ANALYSIS_DIR}/analysis.json",
        png=report(
            f"{layout.ANALYSIS_DIR}/analysis.png",
            caption="../report/analysis.rst",
            category="Systems",
            subcategory="{system}",
            labels={"simulation": "{system}/r{replica}", "figure": "analysis"},
        ),
    log:
        layout.log_path("analyze"),
    benchmark:
        "logs/benchmarks/analyze/{system}/r{replica}/{segments}.tsv"
    localrule: runs_locally("analyze")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        job=job_spec(frame_interval_ps=frame_interval_of, until=until_of),
    shell:
        job_command("analyze")
