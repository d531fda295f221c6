"""Continue until converged: stop a system once its answer is settled.

A system with a goal (the protocol's ``until_observable``, ``until_standard_error`` and
``until_min_ns``; ``target_ns`` stays the cap) is judged at each segment boundary
``b``: once every replica has ``b`` segments in the store, each replica's observable
over those segments gets its equilibrated mean (uncertainty.replica_estimate, the
same as the summary's), and the system stops when the standard error of the mean
over replicas is at most the goal and ``b`` segments are at least ``until_min_ns``.

Every stored segment carries its observables per frame (layout.SEGMENT_OBSERVABLES,
written by `fetch`), so the judgement needs only the store, whichever site stored
what. The decision to stop is created once in the store (the first one made stays,
like a claim): every site and every re-run reads the same one, and a re-run never
decides differently. Each job that learns it copies it to results/ (layout.DECISION),
where planning, packed jobs, `analyze` and `status` read it with one stat per system.

A stopped system's simulations all end at the decision's segment count, so that the
replicas stay equal samples; a replica that had already stored a later segment keeps
it in the store, outside its analysis. Analyses and completion records keep the
name of the cap (the count planned when the run started; Snakemake plans file names
before any decision), and their content says how many segments they cover.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import layout
from .errors import DataError
from .files import atomic_write_json
from .store import Store, shell_program

log = logging.getLogger(__name__)

# Summary names of the same observables, accepted as goals.
ALIASES = {"rmsd_mean_nm": "rmsd_nm", "rg_mean_nm": "rg_nm"}

SCRIPT = Path(__file__).resolve().parent / "store_scripts" / "decisions.sh"


@dataclass(frozen=True)
class Goal:
    """When a system stops, and what its decision is filed under (``key``)."""

    observable: str  # a per-frame column of layout.SEGMENT_OBSERVABLES
    standard_error: float
    min_ns: float
    segment_ns: float
    replicas: int

    @classmethod
    def of(cls, protocol, replicas: int) -> Goal | None:
        """A system's goal, from its protocol (None: it runs to target_ns)."""
        if not protocol.until_observable:
            return None
        return cls(
            ALIASES.get(protocol.until_observable, protocol.until_observable),
            float(protocol.until_standard_error),
            float(protocol.until_min_ns),
            float(protocol.segment_ns),
            int(replicas),
        )

    @classmethod
    def from_record(cls, record: dict | None) -> Goal | None:
        return cls(**record) if record else None

    def record(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """A changed goal is a new decision, never an old one reused."""
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def min_segments(self) -> int:
        return max(1, math.ceil(self.min_ns / self.segment_ns - 1e-9))


@dataclass(frozen=True)
class Verdict:
    """A system judged at one segment boundary."""

    segments: int  # per replica, judged over
    simulated_ns: float  # per replica
    mean: float | None
    error: float | None  # standard error over replicas
    goal: float
    converged: bool
    reason: str  # why it stops or goes on, in words

    def to_json(self) -> dict:
        return asdict(self)


def judge(goal: Goal, series: list[np.ndarray], segments: int) -> Verdict:
    """The verdict on ``segments`` segments of every replica (``series``: each
    replica's observable per frame over them)."""
    from .uncertainty import across_replicas, replica_estimate

    system = across_replicas([replica_estimate(values) for values in series])
    simulated = round(segments * goal.segment_ns, 9)
    if system.error is None:
        reason = f"no error yet: {system.reason}"
        converged = False
    elif segments < goal.min_segments:
        converged = False
        reason = f"standard error {system.error:.3g}; not before {goal.min_ns:g} ns"
    else:
        converged = system.error <= goal.standard_error
        relation = "<=" if converged else ">"
        reason = f"standard error {system.error:.3g} {relation} goal {goal.standard_error:g}"
    return Verdict(segments, simulated, system.mean, system.error, goal.standard_error, converged, reason)


class DecisionBoard:
    """One system's decisions and stored observables, as the store holds them (one
    shell call each, one SSH command for a remote store)."""

    def __init__(self, store: Store, system: str, goal: Goal):
        self.store, self.system, self.goal = store, system, goal

    def _run(self, call: str, what: str, stdin: str | None = None, **values) -> str:
        settings = {
            "sims": layout.STORE_SIMS,
            "decisions": layout.STORE_DECISIONS,
            "seg_digits": layout.SEGMENT_DIGITS,
            "observables": layout.SEGMENT_OBSERVABLES,
            "system": self.system,
            "goal": self.goal.key,
            "replicas": " ".join(f"r{r}" for r in range(1, self.goal.replicas + 1)),
            **values,
        }
        return self.store.run_script(shell_program(SCRIPT, call, settings), f"{what} of {self.system}", stdin)

    def state(self) -> tuple[int, dict | None]:
        """The boundary every replica has reached (segments with observables, in
        order), and the decision if one was made."""
        out = self._run("state", "reading the decision")
        head, _, decision = out.partition("decision\n")
        counts = [int(line.split("\t")[1]) for line in head.splitlines() if "\t" in line]
        return min(counts, default=0), (json.loads(decision) if decision.strip() else None)

    def series(self, segments: int) -> list[np.ndarray]:
        """Each replica's observable over its first ``segments`` segments."""
        import pandas as pd

        out = self._run("series", "reading the observables", boundary=segments)
        files: dict[str, list[list[str]]] = {}  # replica -> one list of lines per segment
        lines: list[str] = []
        for line in out.splitlines(keepends=True):
            if line.startswith("== "):
                lines = []
                files.setdefault(line.split()[1], []).append(lines)
            else:
                lines.append(line)
        series = []
        for replica in range(1, self.goal.replicas + 1):
            try:
                tables = [pd.read_csv(io.StringIO("".join(f))) for f in files.get(f"r{replica}", [])]
                values = np.concatenate([t[self.goal.observable].to_numpy(dtype=float) for t in tables])
            except (KeyError, ValueError, pd.errors.ParserError) as error:
                raise DataError(
                    f"{self.system}/r{replica}: stored observables unreadable for {self.goal.observable} ({error})"
                ) from None
            series.append(values)
        return series

    def decide(self, verdict: Verdict, site: str | None) -> dict:
        """File the decision to stop; the one filed first (by anyone) is returned."""
        record = {**verdict.to_json(), "goal_record": self.goal.record(), "site": site, "decided_at": time.time()}
        out = self._run("decide", "filing the decision", stdin=json.dumps(record, sort_keys=True))
        return json.loads(out)


def goals_of(systems: dict) -> dict[str, Goal]:
    """The systems that stop when converged, with their goals (the others run to their cap)."""
    found = {}
    for system in systems.values():
        goal = Goal.of(system.protocol, system.replicas)
        if goal is not None:
            found[system.id] = goal
    return found


def decision_path(system: str, goal: Goal, root: str | os.PathLike = ".") -> Path:
    return Path(root) / layout.fill(layout.DECISION, system=system, goal=goal.key)


def progress_path(system: str, goal: Goal, root: str | os.PathLike = ".") -> Path:
    return Path(root) / layout.fill(layout.DECISION_PROGRESS, system=system, goal=goal.key)


def stop_after(system: str, goal: Goal | None, root: str | os.PathLike = ".") -> int | None:
    """The segment count a system stopped at, as this site knows it (None: going on)."""
    if goal is None:
        return None
    try:
        with open(decision_path(system, goal, root)) as handle:
            return int(json.load(handle)["segments"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{decision_path(system, goal, root)}: unreadable decision ({error})") from None


def segments_wanted(system: str, n_segments: int, goal: Goal | None, root: str | os.PathLike = ".") -> int:
    """How many segments a simulation of ``system`` runs: its cap, or fewer once its
    system stopped."""
    stop = stop_after(system, goal, root)
    return n_segments if stop is None else min(n_segments, stop)


def progress(system: str, goal: Goal, root: str | os.PathLike = ".") -> dict | None:
    """The latest verdict this site made or learned for a system (for `status`)."""
    for path in (decision_path(system, goal, root), progress_path(system, goal, root)):
        try:
            with open(path) as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            continue
    return None


def standing(system: str, goal: Goal, root: str | os.PathLike = ".") -> dict:
    """Where a system stands against its goal, as this site last judged or learned it:
    converged (at how many ns), or its latest standard error (for status and the report)."""
    judged = progress(system, goal, root) or {}
    return {
        "system": system,
        "observable": goal.observable,
        "goal": goal.standard_error,
        "min_ns": goal.min_ns,
        "converged": bool(judged.get("converged")),
        "judged_at_ns": judged.get("simulated_ns"),
        "mean": judged.get("mean"),
        "error": judged.get("error"),
        "reason": judged.get("reason") or "not judged yet: every replica needs a segment in the store",
    }


def after_segment(
    store: Store, system: str, goal: Goal, site: str | None, root: str | os.PathLike = "."
) -> dict | None:
    """Judge a system after one of its segments was stored: at the boundary every
    replica has reached, unless judged there already; file the decision when it
    stops. Returns the decision (made now or before), or None while it goes on."""
    board = DecisionBoard(store, system, goal)
    segments, decision = board.state()
    if decision is None and segments > 0:
        judged = progress(system, goal, root)
        if judged and judged.get("segments") == segments:
            return None
        verdict = judge(goal, board.series(segments), segments)
        log.info("%s at %d segments: %s", system, segments, verdict.reason)
        if verdict.converged:
            decision = board.decide(verdict, site)
        # after the decision is filed: a judgement recorded here is never judged again
        atomic_write_json(progress_path(system, goal, root), verdict.to_json())
    if decision is not None:
        atomic_write_json(decision_path(system, goal, root), decision)
        log.info("%s stops at %d segments (%s)", system, decision["segments"], decision["reason"])
    return decision


def learn_decision(store: Store, system: str, goal: Goal, site: str | None, root: str | os.PathLike = ".") -> None:
    """after_segment, for a job whose segment is already safe in the store: a failure
    to judge (the store out of reach, an unreadable record) only postpones the judgement
    to the next segment."""
    try:
        after_segment(store, system, goal, site, root)
    except Exception as error:  # noqa: BLE001 - never keeps a stored segment from its record
        log.warning("%s: could not judge convergence now (%s); judged again after the next segment", system, error)
