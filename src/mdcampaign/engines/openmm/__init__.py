"""The OpenMM engine: GPUs (CUDA, OpenCL) or CPUs, explicit or implicit solvent, every
force field of the schema, ligands. Its modules: ``forcefields`` (which files a
protocol uses, what it cannot do; imports no OpenMM), ``plumbing`` (platforms,
integrators, serialization), ``setup`` (structure to equilibrated system), ``runner``
(restartable segments)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ... import layout
from ..base import FAIL, PASS, Engine


class OpenMMEngine(Engine):
    name = "openmm"
    files = layout.EngineFiles(system="system.xml", setup_state="state.xml", final_state="final_state.xml")
    install_hint = "pip install openmm (or conda install -c conda-forge openmm)"
    summary = (
        "every force field, water model and implicit solvent of the schema, ligands, on CUDA, OpenCL or CPU "
        "(`platform`)."
    )
    supports_ligands = True
    measures_speed = True

    def problems(self, protocol) -> Iterator[str]:
        from .forcefields import problems

        return problems(protocol)

    def version(self) -> str | None:
        try:
            import openmm
        except ImportError:
            return None
        return openmm.version.version

    def machine_checks(self, config: dict, profile: dict) -> list[tuple[str, str, str]]:
        """The platforms usable here, against what the config and the profile ask for."""
        from .plumbing import available_platforms

        usable = available_platforms()
        wanted = config.get("platform", "auto")
        wants_gpu = any("gpu" in (resources or {}) for resources in (profile.get("set-resources") or {}).values())
        wants_gpu |= "gpu" in (profile.get("resources") or {})
        checks = [(PASS, f"OpenMM platforms usable here: {', '.join(usable)}", "")]
        if wanted != "auto" and wanted not in usable:
            checks.append(
                (
                    FAIL,
                    f"the profile asks for platform {wanted}, which is not usable here",
                    "install the GPU build (pip install 'openmm[cuda12]') and check nvidia-smi, "
                    "or run on a GPU node, or use a CPU profile",
                )
            )
        elif wants_gpu and "CUDA" not in usable and "OpenCL" not in usable:
            checks.append(
                (
                    FAIL,
                    "the profile requests GPUs but OpenMM sees no CUDA or OpenCL device here",
                    "pip install 'openmm[cuda12]' and check nvidia-smi (on clusters, run doctor on a GPU node)",
                )
            )
        return checks

    def prepare(self, inputs, protocol, out_dir, platform, threads, seed, ligands=()) -> dict:
        from .setup import prepare

        return prepare(inputs["structure"], protocol, out_dir, platform, threads, seed, ligands)

    def run_segment(self, task):
        from .runner import run_segment

        return run_segment(task)

    def checkpoint_step(self, work_dir: Path) -> int | None:
        from .runner import latest_checkpoint_header

        header = latest_checkpoint_header(work_dir)
        return header["step"] if header else None

    def parked(self, work_dir: Path) -> tuple[int, list[Path]] | None:
        from .runner import parked_files

        return parked_files(work_dir)

    def portable_format(self) -> str:
        return "openmm state xml"  # any OpenMM version, any platform, loads it

    def measure_speed(self, setup_dir, platform, threads, seconds, device=None) -> float:
        from .runner import measure_speed

        return measure_speed(setup_dir, self.files, platform, threads, seconds, device)
