def fetch_inputs(wildcards):
    inputs = {
        "trajectory": scratch_path("output", "trajectory.xtc"),
        "energies": scratch_path("output", "energies.csv"),
        "final_state": scratch_path("output", "final_state.xml"),
        "segment": scratch_path("output", "segment.json"),
        "stage": scratch_path("input", "stage.json"),
    }
    if int(wildcards.segment) == 0:
        # The system a simulation starts with is kept with it in the store.
        for name in layout.PINNED_FILES:
            inputs[f"pinned_{name.split('.')[0]}"] = scratch_path("input", name)
    return inputs


rule fetch:
    """Copy a finished segment to the store, verified, and record its manifest."""
    input:
        unpack(fetch_inputs),
    output:
        marker=layout.SEGMENT_MARKER,
    params:
        store=STORE,
        record=layout.SEGMENT_RECORD,
    log:
        layout.log_path("fetch"),
    script:
        "../../scripts/fetch.py"
