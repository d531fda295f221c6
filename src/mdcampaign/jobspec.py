"""What a shell-run job is given: its wildcards, its params and the few config values it
needs, as the one JSON argument of ``scripts/job.py RULE SPEC``. Made by the plan for
the per-segment rules (planning.Plan.job_spec) and by a packed job for each segment it
runs in a slot (packing), read by the job (jobs.main): one format, one place."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobSpec:
    wildcards: dict
    params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"wildcards": self.wildcards, "params": self.params, "config": self.config})

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        return cls(data["wildcards"], data.get("params", {}), data.get("config", {}))
