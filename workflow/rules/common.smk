import shlex
import sys

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, update_config

min_version("9.0")

try:
    from mdcampaign import layout, runlock, shipped
    from mdcampaign.campaign import load_campaign
    from mdcampaign.driver import run_ended, run_started
    from mdcampaign.configuration import (
        command_line_values,
        read_config_file,
        report_requested,
    )
    from mdcampaign.errors import CampaignError, TransferError
    from mdcampaign.guards import account_problem, check_started
    from mdcampaign.planning import Plan
    from mdcampaign.slurm_jobs import earlier_jobs_cancelled, patient_status_checks
    from mdcampaign.summary import simulation_identity
except ModuleNotFoundError as missing:
    sys.exit(
        f"mdcampaign: cannot import {missing.name!r}; install mdcampaign first: "
        f"pip install mdcampaign, or pip install -e <its checkout>"
    )


# The config files given with --configfile, else the campaign's own.
CONFIG_FILES = [str(path) for path in workflow.config_settings.configfiles] or [
    "config/config.yaml"
]
# Snakemake's own message for a YAML syntax error names neither file nor line.
for config_path in CONFIG_FILES:
    try:
        read_config_file(config_path)
    except CampaignError as error:
        sys.exit(f"mdcampaign: {error}")


configfile: "config/config.yaml"


# `--config protocol={segment_ns: 0.02}`: Snakemake hands nested values over as text.
update_config(config, command_line_values(workflow.config_settings.config))

CONFIG_FILE = CONFIG_FILES[-1]
try:
    CAMPAIGN = load_campaign(config, CONFIG_FILE)
    check_started(CAMPAIGN)
except CampaignError as error:
    sys.exit(f"mdcampaign: {error}")

# Before Snakemake checks its lock: clear the one a killed run left (kill -9, OOM, a
# reboot) when that run provably no longer exists, or name the live run that holds it.
if workflow.is_main_process:
    runlock.claim()


onstart:
    # Checked when the run starts (not for dry-runs): a profile whose allocation was
    # never filled in would otherwise fail at the first sbatch.
    if problem := account_problem(config):
        sys.exit(f"mdcampaign: {problem}")
    # On a cluster: follow jobs through a controller outage, and first cancel what an
    # earlier run of this campaign left in the queue (mdcampaign.slurm_jobs).
    if (
        workflow.executor_plugin is not None
        and workflow.executor_plugin.name == "slurm"
    ):
        patient_status_checks(config["slurm_patience_minutes"])
        earlier_jobs_cancelled(".", say=lambda text: print(text, file=sys.stderr))
    # A site's run: the same campaign definition as the store's, and a heartbeat
    # there every poll, which `mdcampaign status` reads (mdcampaign.driver).
    global HEARTBEAT
    try:
        HEARTBEAT = run_started(
            CAMPAIGN,
            config,
            CONFIG_FILE,
            say=lambda text: print(text, file=sys.stderr),
        )
    except (CampaignError, TransferError) as error:
        sys.exit(f"mdcampaign: {error}")


onsuccess:
    run_ended(HEARTBEAT, "finished")


onerror:
    run_ended(HEARTBEAT, "failed")


HEARTBEAT = None


# With --use-conda the job runs the environment's Python; otherwise the Python that
# runs Snakemake (which has mdcampaign installed, venv or not).
JOB_PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)
# Everything the rules ask of the campaign while planning (mdcampaign.planning).
PLAN = Plan(
    CAMPAIGN,
    config,
    CONFIG_FILE,
    checkpoints,
    main_process=workflow.is_main_process,
    full_plan=report_requested(sys.argv[1:]),
    job_python=JOB_PYTHON,
    job_script=str(shipped.JOB_SCRIPT),
)
PACKING = PLAN.packing


wildcard_constraints:
    system=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    replica=layout.REPLICA_PATTERN,
    segment=layout.SEGMENT_PATTERN,
    segments=layout.SEGMENT_PATTERN,
    batch=layout.BATCH_PATTERN,
    round=layout.ROUND_PATTERN,
    digest=layout.DIGEST_PATTERN,
    worker=layout.WORKER_PATTERN,


runs_locally = PLAN.runs_locally
scratch_dir = PLAN.scratch_dir
job_spec = PLAN.job_spec
job_command = PLAN.job_command
setup_inputs = PLAN.setup_inputs
setup_protocol = PLAN.setup_protocol
setup_seed = PLAN.setup_seed
stage_inputs = PLAN.stage_inputs
simulate_inputs = PLAN.simulate_inputs
simulate_runtime = PLAN.simulate_runtime
protocol_of = PLAN.protocol_of
seed_of = PLAN.seed_of
frame_interval_of = PLAN.frame_interval_of
until_of = PLAN.until_of
segment_records = PLAN.segment_records
summary_inputs = PLAN.summary_inputs
pack_inputs = PLAN.pack_inputs
pack_members = PLAN.pack_members
pack_runtime = PLAN.pack_runtime
pull_inputs = PLAN.pull_inputs
worker_rounds = PLAN.worker_rounds
