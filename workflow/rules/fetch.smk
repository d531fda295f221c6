rule fetch:
    """Copy a finished segment to the store, verified, and record its manifest."""
    input:
        unpack(fetch_inputs),
    output:
        marker=layout.SEGMENT_MARKER,
    log:
        layout.log_path("fetch"),
    localrule: runs_locally("fetch")
    conda:
        "../envs/mdcampaign.yaml"
    params:
        store=lambda wildcards: STORE,
        record=layout.SEGMENT_RECORD,
    script:
        "../../scripts/fetch.py"
