"""The interface every MD engine implements: the seam between the workflow and the
engines.

Rules, jobs, packing, status, doctor, tune and the systems table call an
:class:`Engine` (from ``engines.engine_for``) and never ask which engine it is: what it
cannot do with a protocol, whether it is installed and runs here, what a lab's own
inputs for it look like, setting a system up, where a simulation's segment 0 starts,
running a segment, how far an interrupted segment got, how fast it runs here.

An engine lives in its own folder, ``engines/<name>/``: its ``__init__.py`` defines its
Engine and imports nothing heavy (the engine's own modules are imported only when a job
needs them, so that planning a campaign imports no MD engine), and one line of
``engines/__init__.py`` registers it. Its file names (its system, its states) are its
:class:`layout.EngineFiles`; everything else a segment writes is the same for all
engines: ``trajectory.xtc`` with absolute steps and times, ``energies.csv`` with the
columns of :data:`runs.ENERGY_COLUMNS`, ``segment.json`` (:mod:`records`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .. import layout
from ..ligand_spec import LigandSpec
from ..protocol import Protocol
from ..runs import Outcome, SegmentTask

# doctor's verdicts, as machine_checks returns them
PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


class Engine:
    name: str
    files: layout.EngineFiles
    install_hint = ""
    summary = ""  # what it offers, for the configuration reference
    supports_ligands = False  # parameterizes a system's small-molecule ligand
    measures_speed = False  # measure_speed answers (`mdcampaign tune`)

    # -- what it can do, checked before anything runs --------------------------------

    def problems(self, protocol: Protocol) -> Iterator[str]:
        """What this engine cannot do with a protocol, one line each (importing no engine)."""
        return iter(())

    def version(self) -> str | None:
        """The installed engine's version, or None when it cannot run here."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why this engine cannot run here, in one line with the fix, or None."""
        return None if self.version() else f"{self.name} is not installed: {self.install_hint}"

    def machine_checks(self, config: dict, profile: dict) -> list[tuple[str, str, str]]:
        """What `mdcampaign doctor` checks of this machine for this engine beyond
        :meth:`problem`: (PASS/WARN/FAIL, what, fix) each."""
        return []

    def names_own_inputs(self, row: dict) -> str | None:
        """What in a systems-table row (its columns' texts) is a lab's own inputs for
        this engine, run as given instead of set up from a structure ('a .tpr'), or None."""
        return None

    def own_inputs(self, row: dict, where: str, base_dir: Path) -> dict[str, Path]:
        """The lab's own inputs a row names, checked (key -> path as given; {} if none);
        a mistake is a CampaignError naming ``where`` and the column."""
        return {}

    # -- what it does, in jobs ---------------------------------------------------------

    def prepare(
        self,
        inputs: dict[str, Path],
        protocol: Protocol,
        out_dir: Path,
        platform: str,
        threads: int,
        seed: int,
        ligands: tuple[LigandSpec, ...] = (),
    ) -> dict:
        """Set a system up in ``out_dir`` (files: layout.SETUP_OUTPUTS and this engine's
        system and, unless the system's own inputs carry it, setup state) from
        ``inputs`` (``structure``, or the lab's own inputs: System.own_inputs) and its
        ``ligands``, if any; returns what setup.json records."""
        raise NotImplementedError

    def simulation_system(self, setup_dir: Path, seed: int, work_dir: Path) -> Path:
        """The system file a new simulation (replica) pins, made from setup's."""
        return setup_dir / self.files.system

    def setup_state(self, setup_dir: Path) -> Path | None:
        """Where segment 0 starts; None: from the system file's own state."""
        return setup_dir / self.files.setup_state

    def run_segment(self, task: SegmentTask) -> Outcome:
        raise NotImplementedError

    def checkpoint_step(self, work_dir: Path) -> int | None:
        """The step an interrupted segment's newest checkpoint is at, if any (cheap:
        `mdcampaign status` asks it for every running segment)."""
        raise NotImplementedError

    def parked(self, work_dir: Path) -> tuple[int, list[Path]] | None:
        """What an interrupted segment continues from on another machine (parking.py):
        the step it is at and the files of its work folder that carry it on there, or
        None when it has nothing another machine could continue from."""
        return None

    def portable_format(self) -> str:
        """What a machine must share with the one that parked a segment to continue it
        (the format of :meth:`parked`'s files): compared before one is taken over."""
        return f"{self.name} {self.version()}"

    def measure_speed(
        self, setup_dir: Path, platform: str, threads: int, seconds: float, device: int | None = None
    ) -> float:
        """ns/day of a set-up system run for about ``seconds`` in this process (what
        `mdcampaign tune` compares packings with), on GPU ``device`` if given; only
        where ``measures_speed``."""
        raise NotImplementedError
