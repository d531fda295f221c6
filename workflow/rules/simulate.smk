rule simulate:
    """Production MD for one segment; resumes from its last checkpoint if interrupted."""
    input:
        system=scratch_path("input", "system.xml"),
        start_state=scratch_path("input", "start_state.xml"),
        topology=scratch_path("input", "topology.pdb"),
    output:
        trajectory=temp(scratch_path("output", "trajectory.xtc")),
        energies=temp(scratch_path("output", "energies.csv")),
        final_state=temp(scratch_path("output", "final_state.xml")),
        segment=temp(scratch_path("output", "segment.json")),
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
        protocol=protocol_of,
        seed=lambda wc: simulation_of(wc).seed,
        work_dir=lambda wc: layout.fill(scratch_path("work", ""), **wc).rstrip("/"),
    script:
        "../../scripts/simulate.py"
