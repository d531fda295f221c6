checkpoint await_work:
    """A pulling site's worker waits, where Snakemake runs, until there is work in the
    store for it to claim (then its next `pull` job is submitted) or everything this
    site may run is complete (see mdcampaign.pulling)."""
    output:
        decision=layout.PULL_AWAIT,
    log:
        layout.log_path("await_work"),
    localrule: True
    conda:
        "../envs/mdcampaign.yaml"
    params:
        job=job_spec(config=PLAN.pull_job_config),
    shell:
        job_command("await_work")


checkpoint pull:
    """One job of a pulling site: each slot claims the simulation the site prefers in
    the store, runs its segments (and its analysis after the last) while the job
    renews the claim, and takes the next, until nothing is left to claim or the
    job's time is up. Also writes the records and markers of the segments it fetched
    (results/sims/...), which the per-segment rules would declare; here they are not
    outputs, since which simulations a job runs is decided only when it runs."""
    input:
        unpack(pull_inputs),
    output:
        round=layout.PULL_ROUND,
    log:
        layout.log_path("pull"),
    localrule: runs_locally("pull")
    conda:
        "../envs/mdcampaign.yaml"
    threads: PACKING.job_threads if PACKING.enabled else 1
    resources:
        runtime=CAMPAIGN.max_runtime_minutes,
    params:
        job=job_spec(config=PLAN.pull_job_config),
    shell:
        job_command("pull", runtime=True)


rule pulled:
    """The end of one worker's rounds: everything this site may run is complete."""
    input:
        worker_rounds,
    output:
        layout.PULL_END,
    log:
        layout.log_path("pulled"),
    localrule: True
    conda:
        "../envs/mdcampaign.yaml"
    params:
        job=job_spec(final=PLAN.last_input),
    shell:
        job_command("pulled")
