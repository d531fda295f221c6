"""OpenMM plumbing shared by setup and the segment runner: platforms, integrators and
serialization."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import openmm
from openmm import unit

from ...errors import SegmentError
from ...files import atomic_write_text

log = logging.getLogger(__name__)

PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU")


@cache
def platform_works(name: str) -> bool:
    """Whether a platform can actually run: a registered CUDA platform without a
    driver only fails when a Context is created, so create a tiny one."""
    try:
        platform = openmm.Platform.getPlatformByName(name)
    except Exception:  # noqa: BLE001 - OpenMMException: not registered
        return False
    system = openmm.System()
    system.addParticle(1.0)
    try:
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        del context
        return True
    except Exception as error:  # noqa: BLE001 - any failure means "not usable here"
        log.info("OpenMM platform %s is registered but not usable: %s", name, error)
        return False


def available_platforms() -> list[str]:
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return [name for name in names if platform_works(name)]


def choose_platform(preference: str = "auto") -> str:
    """The platform to use: the one named, or CUDA, then OpenCL, then CPU."""
    if preference and preference != "auto":
        if not platform_works(preference):
            raise SegmentError(
                f"OpenMM platform '{preference}' was requested but is not usable here "
                f"(usable: {', '.join(available_platforms()) or 'none'}); set platform: auto "
                "or install the matching OpenMM plugin (e.g. pip install 'openmm[cuda12]')"
            )
        return preference
    for name in PLATFORM_ORDER:
        if platform_works(name):
            return name
    return "Reference"


def platform_properties(name: str, threads: int | None, device: int | None = None) -> dict[str, str]:
    """``device``: the GPU (of a packed job's slot) to run on, if any."""
    if name == "CPU" and threads:
        return {"Threads": str(threads)}
    if name in ("CUDA", "OpenCL"):
        return {"Precision": "mixed", **({"DeviceIndex": str(device)} if device is not None else {})}
    return {}


def make_context(
    system: openmm.System,
    integrator: openmm.Integrator,
    platform_name: str,
    threads: int | None,
    device: int | None = None,
) -> openmm.Context:
    platform = openmm.Platform.getPlatformByName(platform_name)
    return openmm.Context(system, integrator, platform, platform_properties(platform_name, threads, device))


def langevin(temperature_K: float, friction_per_ps: float, timestep_fs: float, seed: int | None = None):
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    if seed is not None:
        integrator.setRandomNumberSeed(seed)
    return integrator


def degrees_of_freedom(system: openmm.System) -> int:
    """Same count as OpenMM's StateDataReporter: massive particles, minus constraints,
    minus 3 if the centre-of-mass motion is removed."""
    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i) > 0 * unit.dalton)
    for i in range(system.getNumConstraints()):
        p1, p2, _ = system.getConstraintParameters(i)
        if system.getParticleMass(p1) > 0 * unit.dalton or system.getParticleMass(p2) > 0 * unit.dalton:
            dof -= 1
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return dof


def total_mass_grams(system: openmm.System) -> float:
    daltons = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles()))
    return daltons / 6.02214076e23


def read_xml(path: str | Path):
    return openmm.XmlSerializer.deserialize(Path(path).read_text())


def write_xml(path: str | Path, obj) -> None:
    atomic_write_text(path, openmm.XmlSerializer.serialize(obj))
