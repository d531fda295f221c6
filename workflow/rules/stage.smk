rule stage:
    """Copy what a segment starts from into its scratch area."""
    input:
        unpack(stage_inputs),
    output:
        staged=temp(directory(scratch_dir("input"))),
    log:
        layout.log_path("stage"),
    localrule: runs_locally("stage")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        protocol=protocol_of,
        seed=lambda wc: simulation_of(wc).seed,
        previous_record=previous_record,
    script:
        "../../scripts/stage.py"
