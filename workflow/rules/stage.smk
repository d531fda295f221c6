rule stage:
    """Copy what a segment continues from (the previous segment's final state and the
    simulation's system) from the store into the segment's scratch area."""
    input:
        unpack(stage_inputs),
    # Writes only its output folder (with stage.json, what was staged, last).
    output:
        staged=temp(directory(scratch_dir("input"))),
    log:
        layout.log_path("stage"),
    localrule: runs_locally("stage")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        job=job_spec(),
    shell:
        job_command("stage")
