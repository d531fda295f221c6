rule setup:
    """Prepare a system from its structure (repair, solvate, minimize, equilibrate), or
    make a lab's own engine inputs ready to run as given."""
    input:
        unpack(setup_inputs),
    # Also writes the engine's own system and equilibrated state (its EngineFiles:
    # system.xml + state.xml, or system.tpr + start.cpt), found through setup.json,
    # which is written last; they are not declared so that the rule is the same for
    # every engine.
    output:
        topology=f"{layout.SETUP_DIR}/topology.pdb",
        trajectory_topology=f"{layout.SETUP_DIR}/trajectory_topology.pdb",
        info=layout.SETUP_INFO,
    log:
        layout.log_path("setup"),
    benchmark:
        "logs/benchmarks/setup/{system}.tsv"
    localrule: runs_locally("setup")
    conda:
        "../envs/mdcampaign.yaml"
    threads: 1
    params:
        protocol=setup_protocol,
        seed=setup_seed,
    script:
        "../../scripts/setup.py"
