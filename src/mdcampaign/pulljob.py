"""The jobs of a pulling site (see pulling.py): `pull` runs slots that claim work in
the store, and `await_work` waits, on the machine running Snakemake, until there is
work to claim or the site is done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from . import layout
from .campaign import Campaign
from .claims import ClaimBoard, Listing, holder_name
from .convergence import Goal, learn_decision, stop_after
from .engines import engine_for
from .errors import DataError, TransferError
from .files import atomic_write_text
from .packing import ASKED, Asked, Claimer, Member
from .parking import park, unpark
from .protocol import engine_of
from .pulling import SiteView, dead_holders, workers
from .records import read_manifest, write_fetched_marker, write_manifest
from .runs import iso_time
from .slots import Slot
from .store import Store

log = logging.getLogger(__name__)


def claim_board(campaign: Campaign, store: Store) -> ClaimBoard:
    return ClaimBoard(store, campaign.pulling.lease_seconds)


def site_view(campaign: Campaign, store: Store) -> SiteView:
    """This site's view of the campaign now: one listing of the store's claims."""
    listing = claim_board(campaign, store).listing()
    return SiteView(campaign, listing, frozenset(dead_holders(listing, campaign.site)))


class StoreClaimer(Claimer):
    """Free slots take the simulation their site prefers, by a claim in the store."""

    def __init__(self, campaign: Campaign, store: Store, root: Path | str = "."):
        self.campaign = campaign
        self.store = store
        self.board = claim_board(campaign, store)
        self.root = Path(root)
        self.tried: set[str] = set()  # simulations this job took once already
        self.poll_seconds = campaign.pulling.poll_seconds
        self.asking: dict[int, tuple[str, str, float]] = {}  # slot -> (simulation, claim, until when)

    def next(self, slot: Slot) -> Member | Asked | None:
        try:
            return self._next(slot)
        except (TransferError, DataError) as error:  # the store is unreachable or a record unreadable
            log.warning("slot %d: cannot take work now (%s); this slot stops", slot.index, error)
            return None

    def _next(self, slot: Slot) -> Member | Asked | None:
        listing = self.board.listing()
        view = SiteView(self.campaign, listing, frozenset(dead_holders(listing, self.campaign.site)))
        for simulation in view.preferred():
            if simulation.name in self.tried:
                continue
            if (
                listing.of(simulation.name).done == 0
                and not (self.root / layout.setup_info(simulation.system)).exists()
            ):
                continue  # its system is set up by a job of this site's next round
            result = self.board.claim(
                simulation.name,
                view.segments(simulation),
                holder_name(self.campaign.site, slot.index),
                json.dumps(
                    {
                        "host": os.uname().nodename,
                        "pid": os.getpid(),
                        "claimed_at": iso_time(time.time()),
                        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    }
                ),
                self.campaign.may_migrate(simulation),
                self.campaign.site,
                tuple(sorted(view.dead)),
                planned=simulation.n_segments,
            )
            if result.outcome != "claimed":
                log.info("slot %d: %s not taken (%s %s)", slot.index, simulation.name, result.outcome, result.detail)
                continue
            self.tried.add(simulation.name)
            try:
                adopt_records(self.store, simulation.name, result.done, self.campaign.scratch_here, self.root)
            except (TransferError, DataError, OSError) as error:
                log.warning(
                    "slot %d: %s: cannot take its records from the store (%s); released",
                    slot.index,
                    simulation.name,
                    error,
                )
                self.board.release(result.lease)
                continue
            self._continue_parked(simulation, listing.of(simulation.name).parked, result.done)
            goal = view.goals.get(simulation.system)
            self._learn_decision(view, simulation.system)
            log.info(
                "slot %d: claimed %s (claim %s) at segment %d of %d",
                slot.index,
                simulation.name,
                result.lease.generation,
                result.done,
                view.segments(simulation),
            )
            return Member(
                simulation.system,
                simulation.replica,
                simulation.n_segments,
                simulation.protocol.record(),
                simulation.seed,
                lease=result.lease,
                frame_interval_ps=simulation.protocol.frame_interval_ps,
                until=goal.record() if goal else None,
            )
        return self._ask(slot, view)

    def _learn_decision(self, view: SiteView, system: str) -> None:
        """A decision to stop ``system`` that another site filed, copied here (where the
        slot's segment count, the analysis and `status` read it)."""
        goal = view.goals.get(system)
        if system in view.stops and stop_after(system, goal, self.root) is None:
            learn_decision(self.store, system, goal, self.campaign.site, self.root)

    def may_go_on(self, member: Member) -> bool:
        """A simulation whose system stops when converged goes on only in step with its
        replicas (SiteView.in_step): one ahead of them is released, to be taken again
        once they caught up. A decision filed meanwhile (by any site) is learned."""
        goal = Goal.from_record(member.until)
        if goal is None or stop_after(member.system, goal, self.root) is not None:
            return True
        try:
            view = site_view(self.campaign, self.store)
            self._learn_decision(view, member.system)
        except (TransferError, DataError) as error:
            log.warning("%s: cannot see its replicas' progress now (%s); it goes on", member.name, error)
            return True
        if view.in_step(self.campaign.simulation(member.system, member.replica)):
            return True
        self.tried.discard(member.name)  # taken again, by this job too, once they caught up
        return False

    def _ask(self, slot: Slot, view: SiteView) -> Asked | None:
        """Nothing left to claim: wait for what this slot asked another site for (it was
        claimable above once released), or ask for the best hand-over candidate."""
        site = self.campaign.site
        if slot.index in self.asking:
            name, generation, until = self.asking[slot.index]
            claims = view.listing.of(name)
            still_held = claims.generation == generation and claims.ended is None
            if still_held and time.time() < until:
                return ASKED
            del self.asking[slot.index]
            if still_held:  # its holder did not get to the end of its segment in time
                log.info("slot %d: %s: no longer waiting for site %s", slot.index, name, claims.holder_site)
                self.board.withdraw(name, generation, site)
        asked = {name for name, _, _ in self.asking.values()}
        for simulation, segment_seconds in view.handover_candidates():
            claims = view.listing.of(simulation.name)
            if simulation.name in asked or simulation.name in self.tried:
                continue
            if self.board.ask(simulation.name, claims.generation, site):
                until = time.time() + 1.5 * segment_seconds + 2 * self.campaign.pulling.lease_seconds
                self.asking[slot.index] = (simulation.name, claims.generation, until)
                log.info(
                    "slot %d: asked site %s for %s (it would finish sooner here); it comes at the end of its "
                    "segment there",
                    slot.index,
                    claims.holder_site,
                    simulation.name,
                )
                return ASKED
        return None

    def _continue_parked(self, simulation, parked: list | None, done: int) -> None:
        """Take what another job parked of the segment this claim continues, if any."""
        if not parked or parked[0] != done:
            return
        work = self.root / layout.scratch_work(self.campaign.scratch_here, simulation.system, simulation.replica, done)
        try:
            unpark(
                self.store,
                simulation.name,
                done,
                parked[1],
                engine_for(simulation.protocol.engine),
                work,
                self.root / ".snakemake" / "mdcampaign" / "parked" / simulation.name,
            )
        except (TransferError, DataError, OSError) as error:
            log.warning(
                "%s: cannot continue segment %d from what was parked in the store (%s); it starts afresh here",
                simulation.name,
                done,
                error,
            )

    def park(self, member: Member, segment: int, work_dir: Path) -> None:
        if member.lease is None or member.state == "lost":
            return
        try:
            step = park(
                self.store,
                self.board,
                member.lease,
                engine_for(engine_of(member.protocol)),
                work_dir,
                segment,
                self.campaign.site,
            )
        except (TransferError, DataError, OSError) as error:
            log.warning("%s: its paused segment could not be parked in the store (%s)", member.name, error)
            return
        if step is not None:
            log.info(
                "%s: segment %d parked in the store at step %d, for any site to continue", member.name, segment, step
            )

    def finish(self, member: Member) -> None:
        if member.state == "lost":
            return
        try:
            self.board.release(member.lease, failed=member.state == "failed")
            log.info("released %s (%s)", member.name, member.state)
        except Exception as error:  # noqa: BLE001 - the claim then expires by itself
            log.warning("could not release %s (%s); it is free again after the lease time", member.name, error)

    def holds(self, member: Member) -> bool:
        try:
            return not self.board.renew([member.lease]) or self.reclaim(member)
        except Exception:  # noqa: BLE001 - unreachable: publishing checks the claim again
            return True

    def reclaim(self, member: Member) -> bool:
        """After this job's claim of ``member`` expired unrenewed (the store was out of
        reach for a whole lease): take it again if nobody else did, and nobody stored a
        segment of it meanwhile; the segment in progress then goes on."""
        result = self.board.claim(
            member.name,
            member.wanted(),
            member.lease.holder,
            "{}",
            self.campaign.may_migrate(self.campaign.simulation(member.system, member.replica)),
            self.campaign.site,
            planned=member.n_segments,
        )
        if result.outcome != "claimed":
            return False
        if result.done != member.fetched():
            self.board.release(result.lease)
            return False
        log.warning(
            "%s: its claim expired while the store was out of reach; nobody took it, taken again (claim %s)",
            member.name,
            result.lease.generation,
        )
        member.lease = result.lease
        return True


def adopt_records(store: Store, simulation: str, done: int, scratch: str, root: Path | str = ".") -> None:
    """Make this site's records of a claimed simulation match the store: the manifests
    of its first ``done`` segments (written by whichever site ran them), so that
    staging, fetching and the analysis find them here; and drop scratch folders of
    segments already in the store (left by an earlier claim here)."""
    root = Path(root)
    system, replica = layout.SimulationId.parse(simulation)
    local = root / layout.sim_records(simulation)
    if done > 0 and layout.segments_fetched(system, replica, done, str(root)) < done:
        source = _store_sim(store, simulation, root)
        for segment in range(done):
            record = root / layout.segment_record(system, replica, segment)
            if record.exists():
                continue
            manifest = read_manifest(source / layout.sim_segment_record(segment))
            write_manifest(record, manifest)
            write_fetched_marker(root / layout.segment_marker(system, replica, segment), manifest)
        log.info("%s: took the records of %d segments from the store into %s", simulation, done, local)
    for segment in range(done):
        shutil.rmtree(root / layout.scratch_segment(scratch, system, replica, segment), ignore_errors=True)


def _store_sim(store: Store, simulation: str, root: Path) -> Path:
    cache = root / ".snakemake" / "mdcampaign" / "manifests" / simulation
    return store.collect(layout.store_sim(simulation), layout.MANIFEST, cache)


def await_work(campaign: Campaign, store: Store, digest_dir: Path, worker: int, output: Path) -> dict:
    """Wait until this worker should pull (claimable work beyond what the site's other
    pulling jobs will take) or the site is done (everything it may run is complete),
    looking at the store every ``pulling.poll_seconds``. Writes and returns the
    decision: {"next": "pull" | "done", ...}; or, without writing it, {"next":
    "stop"} when the site is being stopped."""
    import fcntl

    board = claim_board(campaign, store)
    slots = max(1, campaign.packing.slots if campaign.packing.enabled else 1)
    waited_since = time.time()
    announced = False
    while True:
        if os.path.exists(layout.DRAIN_MARKER):  # `mdcampaign sites stop`: take no more work
            return {"next": "stop", "worker": worker}
        lock_file = digest_dir / ".decide.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # the site's workers decide one at a time, from one listing
            try:
                listing = shared_listing(board, digest_dir / ".listing.json", campaign.pulling.poll_seconds)
            except TransferError as error:  # the store may come back: the site's work is not done
                log.warning("cannot read the claims (%s); trying again in %.0f s", error, campaign.pulling.poll_seconds)
                listing = None
            if listing is not None:
                view = SiteView(campaign, listing, frozenset(dead_holders(listing, campaign.site)))
                unfinished = view.unfinished()
                decision = None
                if not unfinished:
                    given_up = [s.name for s in campaign.share if view.given_up(s)]
                    decision = {"next": "done", "given_up": given_up}
                else:
                    preferred = view.preferred()
                    pulling = pending_pulls(digest_dir, workers(campaign), exclude=worker)
                    if len(preferred) > pulling * slots:
                        decision = {"next": "pull", "claimable": len(preferred), "other_jobs_pulling": pulling}
                    elif not preferred and not pulling and (asks := view.handover_candidates()):
                        # the tail: a job whose slot asks for what runs much slower elsewhere
                        decision = {"next": "pull", "claimable": 0, "handover": asks[0][0].name}
                if decision is not None:
                    decision.update(
                        worker=worker,
                        decided_at=iso_time(time.time()),
                        waited_seconds=round(time.time() - waited_since, 1),
                        unfinished=len(unfinished),
                    )
                    atomic_write_text(output, json.dumps(decision, indent=2) + "\n")
                    return decision
        if listing is None:
            time.sleep(campaign.pulling.poll_seconds)
            continue
        if not announced:
            held = {s.name: view.listing.of(s.name).holder for s in unfinished if view.held(s)}
            log.info(
                "nothing to take now: %d unfinished simulations, %d held by running jobs (%s); looking again "
                "every %.0f s",
                len(unfinished),
                len(held),
                ", ".join(sorted(set(held.values())))[:300],
                campaign.pulling.poll_seconds,
            )
            announced = True
        time.sleep(campaign.pulling.poll_seconds)


def shared_listing(board: ClaimBoard, cache: Path, max_age: float) -> Listing:
    """The claims as the site's waiting workers share them: one listing of the store
    per ``max_age`` seconds, however many workers wait (called under their lock)."""
    try:
        saved = json.loads(cache.read_text())
        # the workers of a site share one host clock: whatever its offset, the difference holds
        age = time.time() - saved["saved_at"]
        if 0 <= age < max_age:
            return Listing.from_json(saved["listing"], seconds_since=age)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: list the store
    listing = board.listing()
    atomic_write_text(cache, json.dumps({"saved_at": time.time(), "listing": listing.to_json()}))
    return listing


def pending_pulls(digest_dir: Path, workers: int, exclude: int | None = None) -> int:
    """This site's pull jobs asked for and not finished: per worker, its latest wait
    for work said "pull" and that round's job has not ended (and has not failed: a
    failed job's worker goes no further, and must not hold the others back)."""
    count = 0
    for worker in range(workers):
        if worker == exclude:
            continue
        decisions = sorted(digest_dir.glob(f"w{worker}/*.await.json"), key=lambda path: int(path.name.split(".")[0]))
        if not decisions:
            continue
        latest = decisions[-1]
        try:
            wants_pull = json.loads(latest.read_text()).get("next") == "pull"
        except (OSError, ValueError):
            continue
        round_ = latest.name.split(".")[0]
        wildcards = {"site": digest_dir.parent.name, "digest": digest_dir.name, "worker": worker, "round": round_}
        ended = latest.with_name(f"{round_}.pull.json").exists()
        failed = _failed(Path(layout.fill(layout.log_path("pull"), **wildcards)))
        if wants_pull and not ended and not failed:
            count += 1
    return count


def _failed(log_file: Path) -> bool:
    try:
        return "FAILED" in log_file.read_text(errors="replace")
    except OSError:
        return False
