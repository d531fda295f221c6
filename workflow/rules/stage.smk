rule stage:
    """Copy what a segment starts from into its scratch area."""
    input:
        unpack(stage_inputs),
    output:
        system_xml=temp(scratch_path("input", "system.xml")),
        start_state_xml=temp(scratch_path("input", "start_state.xml")),
        topology_pdb=temp(scratch_path("input", "topology.pdb")),
        trajectory_topology_pdb=temp(scratch_path("input", "trajectory_topology.pdb")),
        stage_json=temp(scratch_path("input", "stage.json")),
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
