def stage_inputs(wildcards):
    """Segment 0 starts from the system's setup; segment k from segment k-1."""
    segment = int(wildcards.segment)
    if segment == 0:
        return {
            "system": layout.fill(f"{layout.SETUP_DIR}/system.xml", **wildcards),
            "state": layout.fill(f"{layout.SETUP_DIR}/state.xml", **wildcards),
            "topology": layout.fill(f"{layout.SETUP_DIR}/topology.pdb", **wildcards),
            "trajectory_topology": layout.fill(
                f"{layout.SETUP_DIR}/trajectory_topology.pdb", **wildcards
            ),
        }
    return {
        "previous": segment_record(
            wildcards.system, wildcards.replica, segment - 1
        )
    }


def previous_record(wildcards):
    """The manifest of the segment this one continues ('' for segment 0)."""
    segment = int(wildcards.segment)
    if segment == 0:
        return ""
    return layout.fill(
        layout.SEGMENT_RECORD,
        system=wildcards.system,
        replica=wildcards.replica,
        segment=layout.segment_name(segment - 1),
    )


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
    params:
        protocol=protocol_of,
        seed=lambda wc: simulation_of(wc).seed,
        previous_record=previous_record,
    log:
        layout.log_path("stage"),
    script:
        "../../scripts/stage.py"
