"""A simulation protocol: the keys of the config's `protocol` section (and of the
systems table's columns that override them), their consistency, and what the engine
files of a protocol are called."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

from . import layout
from .errors import CampaignError
from .protonation import problems as protonation_problems
from .validation import schema_defaults

# Segment names have layout.SEGMENT_DIGITS digits; more segments also mean more jobs
# than any allocation would want.
MAX_SEGMENTS = 10**layout.SEGMENT_DIGITS
# Above this timestep, hydrogen mass repartitioning is required for stable dynamics.
MAX_TIMESTEP_WITHOUT_HMR_FS = 2.5


def engine_of(record: dict) -> str:
    """The engine of a protocol record (Protocol.record, a segment manifest's protocol)."""
    return record.get("engine", ADDED_KEYS["engine"])


@dataclass(frozen=True)
class Protocol:
    """Simulation protocol of one system. Field names are the schema's keys."""

    forcefield: str
    solvent: str
    water_model: str
    implicit_model: str
    box_shape: str
    padding_nm: float
    ionic_strength_molar: float
    ph: float
    temperature_K: float
    pressure_bar: float
    friction_per_ps: float
    timestep_fs: float
    hmr: bool
    nonbonded_cutoff_nm: float
    minimization_max_iterations: int
    equilibration_ps: float
    segment_ns: float
    target_ns: float
    frame_interval_ps: float
    checkpoint_interval_ps: float
    trajectory_atoms: str
    seed: int
    # Keys added after campaigns existed (ADDED): records leave them out while they hold
    # their schema default, which means "as before" (ADDED_KEYS).
    engine: str
    chains: str
    model: int
    altloc: str
    remove_residues: str
    keep_crystal_water: bool
    mutations: str
    protonation: str
    until_observable: str
    until_standard_error: float
    until_min_ns: float

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_record(cls, record: dict) -> Protocol:
        """The protocol a record (Protocol.record, a manifest's protocol) carries."""
        return cls(**{**ADDED_KEYS, **record})

    def record(self) -> dict:
        """The protocol as rule params and records carry it (``from_record`` restores
        it): keys added later are left out at their as-before value, so that
        upgrading does not change existing jobs' params (Snakemake reruns a job whose
        params changed) and records read the same as before. The `until_` keys are
        left out too: when to stop is not how to simulate (segments get them as their
        own param, convergence.Goal), so they may change at any time."""
        return {
            key: value
            for key, value in self.__dict__.items()
            if not (key in ADDED_KEYS and value == ADDED_KEYS[key]) and not key.startswith(UNTIL_PREFIX)
        }

    @property
    def explicit(self) -> bool:
        return self.solvent == "explicit"

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps(self, picoseconds: float) -> int:
        return round(picoseconds / self.timestep_ps)

    @property
    def segment_steps(self) -> int:
        return self.steps(self.segment_ns * 1000.0)

    @property
    def frame_steps(self) -> int:
        return self.steps(self.frame_interval_ps)

    @property
    def checkpoint_steps(self) -> int:
        return self.steps(self.checkpoint_interval_ps)

    @property
    def equilibration_steps(self) -> int:
        return self.steps(self.equilibration_ps)

    @property
    def n_segments(self) -> int:
        # A tiny tolerance so that 0.3 / 0.1 counts as 3 segments, not 4.
        return max(1, math.ceil(self.target_ns / self.segment_ns - 1e-9))

    def problems(self) -> Iterator[str]:
        """Inconsistencies between keys that the schema cannot express (what an engine
        cannot do with them: engines.engine_problems)."""
        if self.segment_ns > self.target_ns + 1e-12:
            yield f"segment_ns ({self.segment_ns}) must not exceed target_ns ({self.target_ns})"
        if self.n_segments > MAX_SEGMENTS:
            yield (
                f"target_ns ({self.target_ns}) / segment_ns ({self.segment_ns}) makes {self.n_segments} segments per "
                f"simulation; at most {MAX_SEGMENTS} (use longer segments)"
            )
        if self.timestep_fs > MAX_TIMESTEP_WITHOUT_HMR_FS and not self.hmr:
            yield (
                f"timestep_fs {self.timestep_fs} needs hmr: true (without hydrogen mass "
                f"repartitioning use at most {MAX_TIMESTEP_WITHOUT_HMR_FS} fs)"
            )
        for key, value, picoseconds in (
            ("frame_interval_ps", self.frame_interval_ps, self.frame_interval_ps),
            ("checkpoint_interval_ps", self.checkpoint_interval_ps, self.checkpoint_interval_ps),
            ("segment_ns", self.segment_ns, self.segment_ns * 1000.0),
            ("equilibration_ps", self.equilibration_ps, self.equilibration_ps),
        ):
            if picoseconds and not _is_multiple(picoseconds, self.timestep_ps):
                yield f"{key} ({value}) must be a whole number of timesteps ({self.timestep_fs} fs)"
                return
        if self.frame_steps > self.segment_steps or self.segment_steps % self.frame_steps:
            yield (
                f"segment_ns ({self.segment_ns}) must be a whole number of frame intervals "
                f"(frame_interval_ps {self.frame_interval_ps})"
            )
        if self.checkpoint_steps % self.frame_steps:
            yield (
                f"checkpoint_interval_ps ({self.checkpoint_interval_ps}) must be a whole number "
                f"of frame intervals (frame_interval_ps {self.frame_interval_ps})"
            )
        yield from _mutation_problems(self.mutations)
        yield from protonation_problems(self.protonation)
        if self.until_observable and not self.until_standard_error > 0:
            yield f"until_observable ({self.until_observable}) needs its goal: until_standard_error above 0"
        if self.until_observable and self.until_min_ns > self.target_ns:
            yield (
                f"until_min_ns ({self.until_min_ns}) is longer than target_ns ({self.target_ns}), the cap: "
                "no system could stop early"
            )


ADDED = (
    "engine",
    "chains",
    "model",
    "altloc",
    "remove_residues",
    "keep_crystal_water",
    "mutations",
    "protonation",
    "until_observable",
    "until_standard_error",
    "until_min_ns",
)
# Written in the config as one mapping, `until: {observable, standard_error, min_ns}`.
UNTIL_KEYS = ("observable", "standard_error", "min_ns")
UNTIL_PREFIX = "until_"
ADDED_KEYS = {key: value for key, value in schema_defaults("protocol").items() if key in ADDED}


def _mutation_problems(mutations: str) -> Iterator[str]:
    """What the schema's pattern cannot see in ``mutations``: a residue changed twice
    (only one change could be applied) or into itself."""
    first: dict[tuple[str, str], str] = {}
    for text in filter(None, mutations.split(";")):
        chain, change = text.split(":", 1)
        number = change[1:-1]
        if change[0] == change[-1]:
            yield f"mutations: {text} changes residue {number} of chain {chain} into itself ({change[0]}); remove it"
        earlier = first.setdefault((chain, number), text)
        if earlier != text or mutations.split(";").count(text) > 1:
            yield (
                f"mutations: residue {number} of chain {chain} is mutated twice ({earlier} and {text}); "
                "give one mutation per residue (one row per mutant)"
            )
            return


def _is_multiple(value: float, unit: float) -> bool:
    ratio = value / unit
    return abs(ratio - round(ratio)) < 1e-6 and round(ratio) > 0


def flatten_until(protocol: dict, where: str) -> None:
    """``until: {observable, standard_error, min_ns}`` of a config's protocol, as its
    keys ``until_observable``, ... (in place): one way to write it, one to read it."""
    until = protocol.pop("until", None)
    if until is None:
        return
    if not isinstance(until, dict) or set(until) - set(UNTIL_KEYS):
        raise CampaignError(f"{where}: protocol.until: expected a mapping with {', '.join(UNTIL_KEYS)} (got {until!r})")
    for key, value in until.items():
        protocol[UNTIL_PREFIX + key] = value


def protocol_from(values: dict, where: str) -> Protocol:
    protocol = Protocol(**{key: values[key] for key in Protocol.keys()})  # noqa: SIM118 - Protocol.keys() is its fields
    for problem in protocol.problems():
        raise CampaignError(f"{where}: {problem}")
    return protocol
