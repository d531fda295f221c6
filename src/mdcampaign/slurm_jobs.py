"""The run's Slurm jobs where Snakemake's Slurm executor plugin does not look after
them: a controller outage, a launch that failed, a refused submission, and jobs that
an earlier run of the campaign left in the queue.

Snakemake's Slurm executor plugin (2.x) asks `squeue` (or `sacct`) for its jobs' states
at every poll. When `slurmctld` does not answer (a crash, a restart, maintenance), two
things go wrong in it, both seen on the test cluster:

- it cannot read `MinJobAge` and falls back to `sacct`, which a cluster without an
  accounting database cannot answer even once the controller is back;
- after a poll whose every attempt failed it forgets its active jobs: they are neither
  finished nor failed, so Snakemake waits for them forever, silently.

`patient_status_checks` makes the plugin patient without changing anything it decides
while Slurm answers. The jobs of a poll that got no answer stay active (the plugin
never declares a job failed without an answer, so nothing is resubmitted while it may
still run); the last `MinJobAge` read stands in while it cannot be read. A job whose
state Slurm has not given for longer than ``patience_minutes`` (no answer at all, or
answers that no longer mention it) stops the run with one line that names those jobs:
Snakemake then stops without cancelling anything, and the same command is safe to run
again (a segment has one runner at a time, see runs.sole_runner; whatever the jobs
left is continued).

Installed from the workflow's `onstart` when the executor is `slurm` (it touches only
that plugin's class, in the process that runs Snakemake).
"""

from __future__ import annotations

import time

DEFAULT_PATIENCE_MINUTES = 10.0
# While Slurm is silent about a job, poll at least every sixth of the patience (not
# less than this): the plugin's own interval grows to 3 minutes.
POLL_WHILE_SILENT_SECONDS = 10.0
# A job left out of Slurm's answers this long counts as one Slurm is silent about.
MISSING_GRACE_SECONDS = 60.0
# squeue's reason for a job whose launch failed and that Slurm requeued on hold
LAUNCH_FAILED_HELD = "launch_failed_requeued_held"


class _Watch:
    """What the status checks have learnt, across polls."""

    def __init__(self, patience_seconds: float):
        self.patience_seconds = patience_seconds
        self.min_job_age: int | None = None  # the last value Slurm gave
        self.answer: dict | None = None  # this poll's last answer (job id -> state), if any
        self.last_seen: dict[str, float] = {}  # job id -> when Slurm last said something of it
        self.silent: set[str] = set()  # job ids Slurm says nothing of now
        self.rules: dict[str, str] = {}  # job id -> what it runs, for the messages


def patient_status_checks(patience_minutes: float = DEFAULT_PATIENCE_MINUTES) -> bool:
    """Install the patient status checks into the Slurm executor plugin (idempotent).
    False if the plugin is not installed or not the version this was written for."""
    try:
        import snakemake_executor_plugin_slurm as plugin
        from snakemake_interface_common.exceptions import WorkflowError
    except ImportError:
        return False
    executor = plugin.Executor
    needed = ("check_active_jobs", "_report_job_error_threadsafe")
    if not all(hasattr(executor, name) for name in needed) or not hasattr(plugin, "query_job_status"):
        return False
    if getattr(executor, "_mdcampaign_patient", None) is not None:
        executor._mdcampaign_patient.patience_seconds = 60.0 * patience_minutes
        return True
    watch = _Watch(60.0 * patience_minutes)
    lookup_ids = getattr(plugin, "_status_lookup_ids", lambda job_id: [job_id])
    original_query = plugin.query_job_status
    original_min_job_age = plugin.get_min_job_age
    original_check = executor.check_active_jobs
    original_report_error = executor._report_job_error_threadsafe

    def get_min_job_age():
        value = original_min_job_age()
        if value is None:  # no answer: the controller's setting has not changed meanwhile
            return watch.min_job_age
        watch.min_job_age = value
        return value

    async def query_job_status(command, logger):
        answer, duration = await original_query(command, logger)
        if answer is not None:
            watch.answer = answer
        return answer, duration

    async def check_active_jobs(self, active_jobs):
        watch.answer = None
        kept = [job async for job in original_check(self, active_jobs)]
        if watch.answer is None:  # no answer at all: the plugin dropped them, but they are still Slurm's
            unknown = [job.external_jobid for job in active_jobs]
            kept += [job for job in active_jobs if job not in kept]
        else:
            unknown = [
                job.external_jobid
                for job in kept
                if not any(candidate in watch.answer for candidate in lookup_ids(job.external_jobid))
            ]
            kept = _resubmit_failed_launches(self, kept, watch.answer)
        for job in active_jobs:
            watch.rules.setdefault(job.external_jobid, _describe(job))
        if unknown:  # look again sooner than the plugin's growing interval would
            self.next_seconds_between_status_checks = min(
                getattr(self, "next_seconds_between_status_checks", None) or POLL_WHILE_SILENT_SECONDS,
                max(POLL_WHILE_SILENT_SECONDS, watch.patience_seconds / 6.0),
            )
        _update(
            watch, {job.external_jobid for job in active_jobs}, unknown, time.monotonic(), self.logger, WorkflowError
        )
        for job in kept:
            yield job

    def report_job_error(self, job_info, msg=None, **kwargs):
        if msg and msg.startswith("SLURM sbatch failed"):
            msg = refused_submission_message(job_info.job, msg)
        return original_report_error(self, job_info, msg, **kwargs)

    plugin.get_min_job_age = get_min_job_age
    plugin.query_job_status = query_job_status
    executor.check_active_jobs = check_active_jobs
    executor._report_job_error_threadsafe = report_job_error
    executor._mdcampaign_patient = watch
    return True


def _resubmit_failed_launches(executor, kept: list, answer: dict) -> list:
    """Jobs that Slurm requeued and held because their launch failed (it happens when
    slurmctld goes away while it starts them) never run by themselves, and never
    started: cancel them and report them failed, so that Snakemake resubmits them
    (its retries). Jobs held on purpose (by their user or an admin) are left alone.
    Returns the jobs still to follow."""
    from . import slurm

    pending = [job.external_jobid for job in kept if answer.get(job.external_jobid) == "PENDING"]
    reasons = slurm.pending_reasons(pending) if pending else {}
    held = [job for job in kept if reasons.get(job.external_jobid) == LAUNCH_FAILED_HELD]
    if not held or not slurm.cancel([job.external_jobid for job in held]):
        return kept
    for job in held:
        executor.report_job_error(
            job,
            msg=(
                f"mdcampaign: Slurm held job {job.external_jobid} ({_describe(job)}) after its launch failed "
                f"({LAUNCH_FAILED_HELD}); it never started: cancelled it, to be submitted again"
            ),
        )
    return [job for job in kept if job not in held]


def _update(watch: _Watch, active: set[str], unknown: list[str], now: float, log, error: type[Exception]) -> None:
    """Track since when Slurm last said something of each active job; stop once it has
    been silent about one for longer than the patience."""
    for job_id in list(watch.last_seen):
        if job_id not in active:
            del watch.last_seen[job_id]  # finished, failed or reported: no longer ours to follow
    for job_id in active:
        if job_id not in unknown:
            if job_id in watch.silent:
                log.warning(f"mdcampaign: Slurm answers about job {job_id} again; following it")
                watch.silent.discard(job_id)
            watch.last_seen[job_id] = now
        else:
            watch.last_seen.setdefault(job_id, now)  # first seen now (just submitted)
    # A job an answer leaves out may just not be in the accounting database yet (sacct
    # lags): silent only after a grace. No answer at all: silent at once.
    grace = 0.0 if set(unknown) >= active else min(MISSING_GRACE_SECONDS, watch.patience_seconds / 2.0)
    newly = sorted(
        job_id for job_id in unknown if job_id not in watch.silent and now - watch.last_seen[job_id] >= grace
    )
    watch.silent.update(newly)
    watch.silent &= active
    if newly:
        log.warning(
            f"mdcampaign: Slurm does not say what became of job(s) {', '.join(newly)} (is slurmctld down? "
            f"`scontrol ping`); waiting for it up to {watch.patience_seconds / 60.0:g} min without cancelling or "
            "resubmitting anything"
        )
    stale = sorted(job_id for job_id in watch.silent if now - watch.last_seen[job_id] > watch.patience_seconds)
    if stale:
        jobs = ", ".join(f"{job_id} ({watch.rules.get(job_id, '?')})" for job_id in stale)
        raise error(
            f"mdcampaign: Slurm has not said what became of job(s) {jobs} for over "
            f"{watch.patience_seconds / 60.0:g} min (slurmctld down? `scontrol ping`); stopping without "
            "cancelling anything: those jobs finish or stop by themselves, and running the same command again "
            "is safe (it continues what they left)"
        )


def _describe(job_info) -> str:
    """'simulate ala/r1 segment 0000' style: the rule and its wildcards."""
    job = job_info.job
    try:
        wildcards = ",".join(f"{key}={value}" for key, value in job.wildcards.items())
        return f"{job.rule.name} {wildcards}".strip()
    except AttributeError:
        return getattr(job, "name", "?")


def refused_submission_message(job, message: str) -> str:
    """One line for a submission sbatch refused, naming the partition (a partition that
    is down, drained or inactive takes no jobs)."""
    said = message.split("The error message was", 1)[-1].split("\n", 1)[0].strip(" '.")
    try:
        partition = job.resources.get("slurm_partition") or "the default partition"
        rule = job.rule.name
    except AttributeError:
        partition, rule = "?", "?"
    return (
        f"mdcampaign: Slurm refused the {rule} job for partition '{partition}': {said}; check the partition "
        f"with `sinfo -p {partition}` (one that is down, drained or inactive takes no jobs) or choose another in "
        "the profile, then run the same command again"
    )


# Jobs that are still in Slurm's hands (not yet ended).
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED")


def earlier_jobs_cancelled(directory: str = ".", wait_seconds: float = 120.0, say=print) -> list[str]:
    """Cancel the jobs an earlier run of this campaign left in Slurm's queue, before
    this run submits its own: two runs of one campaign never run at once (runlock), so
    any such job is left over (its Snakemake was stopped, killed or lost sight of it
    in an outage), and this run would submit the same work again beside it. A pending
    one never started; a running segment checkpoints when cancelled (SIGTERM) and is
    continued by this run. Waits (up to ``wait_seconds``) until they have ended.
    The cancelled job ids."""
    from . import slurm

    jobs = slurm.jobs_from(directory)
    left = [job for job in jobs or [] if job["state"] in LIVE_STATES]
    if not left:
        return []
    described = ", ".join(f"{job['job_id']} ({_comment_words(job['comment'])}, {job['state'].lower()})" for job in left)
    say(
        f"mdcampaign: job(s) {described} of an earlier run of this campaign are still in Slurm's queue: cancelling "
        "them (a running segment checkpoints first), so that this run does not submit the same work beside them"
    )
    ids = [job["job_id"] for job in left]
    slurm.cancel(ids)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        now = {job["job_id"] for job in slurm.jobs_from(directory) or [] if job["state"] in LIVE_STATES}
        if not now & set(ids):
            break
        time.sleep(2.0)
    return ids


def _comment_words(comment: str) -> str:
    """rule_simulate_wildcards_ala_1_0000 -> 'simulate ala 1 0000'."""
    rule, _, values = comment.removeprefix("rule_").partition("_wildcards_")
    return f"{rule} {values.replace('_', ' ')}".strip()
