"""The MD engines, by name: the registry.

An engine is a folder ``engines/<name>/`` whose ``__init__.py`` defines its
:class:`~mdcampaign.engines.base.Engine` (light: its heavy modules are imported only
when a job needs them), plus one line below. Nothing else names an engine: the schema's
``engine`` key, the systems table, validation, jobs, packing, status, doctor and tune
all go through :func:`engine_for`.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import layout
from ..protocol import Protocol, engine_of
from .base import Engine
from .gromacs import GromacsEngine
from .openmm import OpenMMEngine

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (OpenMMEngine(), GromacsEngine())}


def engine_for(name: str) -> Engine:
    return ENGINES[name]


def unknown_engine(name) -> str | None:
    """'must be one of: ...' for a name no engine has (None for a known one)."""
    if name in ENGINES:
        return None
    return f"must be one of: {', '.join(ENGINES)} (got {name!r})"


def engine_problems(protocol: Protocol, own_inputs: bool = False) -> Iterator[str]:
    """What the protocol's engine cannot do with it (with a lab's own engine inputs the
    inputs decide the force field, water and preparation: nothing to check)."""
    if not own_inputs:
        yield from engine_for(protocol.engine).problems(protocol)


def files_of(record: dict) -> layout.EngineFiles:
    """The engine's file names for a protocol record (Protocol.record, a segment
    manifest's protocol)."""
    return engine_for(engine_of(record)).files
