"""Energy terms of GROMACS ``.edr`` files (pyedr, or ``gmx energy`` where pyedr
refuses), as the energies table's columns."""

from __future__ import annotations

import re
from pathlib import Path

from .gmx import run_gmx

# energies.csv column -> .edr term, and the factor to the column's unit
EDR_TERMS = {
    "potential_energy_kJ_mol": ("Potential", 1.0),
    "kinetic_energy_kJ_mol": ("Kinetic En.", 1.0),
    "total_energy_kJ_mol": ("Total Energy", 1.0),
    "temperature_K": ("Temperature", 1.0),
    "volume_nm3": ("Volume", 1.0),
    "density_g_per_mL": ("Density", 1e-3),  # kg/m^3 -> g/mL
}


def read_edr(path: Path) -> dict:
    import pyedr

    try:
        return pyedr.edr_to_dict(str(path), verbose=False)
    except TypeError:  # older pyedr without `verbose`
        return pyedr.edr_to_dict(str(path))


def gmx_energy(edr: Path, terms: list[str], log_file: Path) -> dict:
    """Energy terms of an .edr through ``gmx energy`` (pyedr refuses the negative steps
    of the equilibration, which ends at step 0)."""
    xvg = edr.with_suffix(".xvg")
    run_gmx(
        "energy",
        [("-f", edr), ("-o", xvg)],
        cwd=edr.parent,
        subject=edr,
        log_file=log_file,
        stdin="".join(term.replace(" ", "-") + "\n" for term in terms) + "\n",
    )
    names, rows = [], []
    for line in xvg.read_text().splitlines():
        legend = re.match(r'^@ s\d+ legend "(.*)"', line)
        if legend:
            names.append(legend.group(1))
        elif line and line[0] not in "#@":
            rows.append([float(x) for x in line.split()])
    data = {"Time": [row[0] for row in rows]}
    for index, name in enumerate(names):
        data[name] = [row[index + 1] for row in rows]
    return data


def edr_frames(path: Path) -> tuple[list[str], list[tuple[int, float, list[float]]]]:
    """Term names and (step, time, values) of every complete frame of an .edr file
    (a run killed while writing leaves a torn last frame: it is left out)."""
    from pyedr.pyedr import EDRFile

    edr = EDRFile(str(path))
    names = [nm.name for nm in edr.nms]
    frames = []
    iterator = iter(edr)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            break
        except Exception:  # noqa: BLE001 - torn last frame
            break
        if frame.ener:
            frames.append((int(frame.step), float(frame.t), [e.e for e in frame.ener]))
    return names, frames
