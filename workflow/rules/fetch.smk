checkpoint fetch:
    """Copy a finished segment to the store, verified, and record its manifest.

    A checkpoint: when it completes, Snakemake asks again whether the simulation needs
    another segment (the `continue` decision), and only then adds that segment's jobs.
    """
    input:
        segment=scratch_dir("output"),
    # Also writes the segment's record (layout.SEGMENT_RECORD), not declared: the plan
    # refers to a finished segment by it, a plain file no rule makes, so that finished
    # segments cost planning nothing; and the copy in the store, which may be on
    # another host (Snakemake would check it at every plan).
    output:
        marker=layout.SEGMENT_MARKER,
    log:
        layout.log_path("fetch"),
    localrule: runs_locally("fetch")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        job=job_spec(protocol=protocol_of, seed=seed_of, until=until_of),
    shell:
        job_command("fetch")
