checkpoint pack:
    """One job for a batch of simulations (packing, see mdcampaign.slots): its slots
    run the batch's segments side by side, each slot going on with the next waiting
    segment until the batch is done or the job's time is up; every segment is staged,
    simulated and fetched exactly as by the per-segment rules, with the same logs.

    A checkpoint: when it completes, Snakemake asks again which simulations need
    more segments, and plans the batch's next job if any. Also writes each segment's
    record and marker (results/sims/...), which are not declared here: they are the
    fetch rule's outputs, and the analysis asks for them only once they exist.
    """
    input:
        pack_inputs,
    output:
        round=layout.PACK_ROUND,
    log:
        layout.log_path("pack"),
    localrule: runs_locally("pack")
    conda:
        "../envs/mdcampaign.yaml"
    threads: PACKING.job_threads
    resources:
        runtime=pack_runtime,
    params:
        job=job_spec(members=pack_members, packing=PLAN.packing_of),
    shell:
        job_command("pack", runtime=True)
