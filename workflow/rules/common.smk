import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

try:
    from mdcampaign import layout
    from mdcampaign.campaign import load_campaign
    from mdcampaign.errors import CampaignError
    from mdcampaign.summary import simulation_identity
except ModuleNotFoundError as missing:
    sys.exit(
        f"mdcampaign: cannot import {missing.name!r}; install the project first: "
        f"pip install -e {Path(workflow.basedir).parent}"
    )


configfile: "config/config.yaml"


CONFIG_FILE = str(workflow.configfiles[-1]) if workflow.configfiles else "config"
SCHEMA_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent / "schemas"
try:
    CAMPAIGN = load_campaign(config, CONFIG_FILE, schema_dir=str(SCHEMA_DIR))
except CampaignError as error:
    sys.exit(f"mdcampaign: {error}")

SCRATCH = CAMPAIGN.scratch
STORE = CAMPAIGN.store
SIMULATIONS = CAMPAIGN.simulations


wildcard_constraints:
    system=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    replica=layout.REPLICA_PATTERN,
    segment=layout.SEGMENT_PATTERN,


def scratch_path(area, name):
    """A file of a segment's scratch area ('input', 'work' or 'output')."""
    return f"{SCRATCH}/{layout.SCRATCH_SEGMENT}/{area}/{name}"


def simulation_of(wildcards):
    return CAMPAIGN.simulation(wildcards.system, wildcards.replica)


def protocol_of(wildcards):
    return CAMPAIGN.systems[wildcards.system].protocol.__dict__


def segment_record(system, replica, segment):
    """How the DAG refers to 'segment k of this simulation is in the store'.

    A fetched segment is referred to by its manifest, a plain file that no rule
    produces, so Snakemake does not expand the stage/simulate/fetch jobs of finished
    segments: planning cost follows the work left, not the campaign's size. A segment
    not yet fetched is referred to by the fetch rule's marker, which pulls in its jobs.
    """
    wildcards = dict(
        system=system, replica=replica, segment=layout.segment_name(segment)
    )
    record = layout.fill(layout.SEGMENT_RECORD, **wildcards)
    if os.path.exists(record):
        return record
    return layout.fill(layout.SEGMENT_MARKER, **wildcards)


def segment_records(wildcards):
    simulation = simulation_of(wildcards)
    return [
        segment_record(simulation.system, simulation.replica, k)
        for k in range(simulation.n_segments)
    ]


def record_paths(wildcards):
    simulation = simulation_of(wildcards)
    return [
        layout.fill(
            layout.SEGMENT_RECORD,
            system=simulation.system,
            replica=simulation.replica,
            segment=layout.segment_name(k),
        )
        for k in range(simulation.n_segments)
    ]
