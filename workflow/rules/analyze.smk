rule analyze:
    """RMSD, radius of gyration, RMSF and secondary structure over all segments."""
    input:
        segment_records,
    output:
        rmsd=f"{layout.ANALYSIS_DIR}/rmsd.csv",
        rg=f"{layout.ANALYSIS_DIR}/rg.csv",
        rmsf=f"{layout.ANALYSIS_DIR}/rmsf.csv",
        dssp=f"{layout.ANALYSIS_DIR}/dssp.csv",
        json=f"{layout.ANALYSIS_DIR}/analysis.json",
        png=report(
            f"{layout.ANALYSIS_DIR}/analysis.png",
            caption="../report/analysis.rst",
            category="Simulations",
            subcategory="{system}",
            labels={"simulation": "{system}/r{replica}", "figure": "analysis"},
        ),
    log:
        layout.log_path("analyze", with_segment=False),
    benchmark:
        "logs/benchmarks/analyze/{system}/r{replica}.tsv"
    localrule: runs_locally("analyze")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        records=record_paths,
        n_segments=lambda wc: simulation_of(wc).n_segments,
        frame_interval_ps=lambda wc: simulation_of(wc).protocol.frame_interval_ps,
        cache=f"{SCRATCH}/{layout.SIM}/analysis-cache",
    script:
        "../../scripts/analyze.py"
