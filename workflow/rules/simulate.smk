rule simulate:
    """Production MD for one segment; resumes from its last checkpoint if interrupted."""
    input:
        unpack(simulate_inputs),
    # Also writes the runner's work folder (scratch .../work: checkpoints, the partial
    # trajectory), not declared so that Snakemake never deletes a partial segment
    # (an interrupted job resumes from it).
    output:
        segment=temp(directory(scratch_dir("output"))),
    log:
        layout.log_path("simulate"),
    benchmark:
        "logs/benchmarks/simulate/{system}/r{replica}/{segment}.tsv"
    localrule: runs_locally("simulate")
    conda:
        "../envs/mdcampaign.yaml"
    threads: 1
    resources:
        runtime=simulate_runtime,
    params:
        job=job_spec(protocol=protocol_of, seed=seed_of),
    shell:
        job_command("simulate", runtime=True)
