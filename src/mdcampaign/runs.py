"""What every engine's segment runner shares: the columns of the energies table, how a
stop request (a signal) is caught so that the runner can checkpoint first, and what a
run of a segment returns. Imports no MD engine."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ENERGY_COLUMNS = (
    "step", "time_ps", "potential_energy_kJ_mol", "kinetic_energy_kJ_mol", "total_energy_kJ_mol",
    "temperature_K", "volume_nm3", "density_g_per_mL",
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@dataclass
class Outcome:
    complete: bool
    info: dict = field(default_factory=dict)


class StopRequest:
    """Records stop signals instead of dying, so the loop can checkpoint first."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        log.warning("received %s: will checkpoint and stop", self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
