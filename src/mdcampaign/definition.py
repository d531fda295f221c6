"""The campaign's definition, which every site must run alike: per system its protocol,
replicas, input files, ligand, pin and migration; not what sites may legitimately set
differently (``site``, ``packing``, ``slurm_account``, ``platform``,
``max_runtime_minutes``, their scratch and speeds).

`mdcampaign sites deploy` writes it to the store (``campaign.json``); a site's run
compares its own with the store's copy before it starts (the first site to run writes
it if there is none) and refuses to run another definition, in one line naming the
first key that differs: two sites never run different protocols for one simulation.
"""

from __future__ import annotations

import json

from . import layout
from .campaign import Campaign
from .errors import CampaignError
from .ligand_spec import ligands_record
from .store import Store


def campaign_definition(campaign: Campaign) -> dict:
    """What every site of the campaign must agree on (plain JSON data)."""
    return {
        "campaign": campaign.name,
        "migrate": campaign.pulling.migrate,
        "systems": {
            system.id: {
                "replicas": system.replicas,
                "protocol": system.protocol.record(),
                "inputs": [str(path) for path in system.input_files],
                "ligand": ligands_record(system.ligands),
                "site": system.site,
                "migrate": system.migrate,
            }
            for system in campaign.systems.values()
        },
    }


def first_difference(ours, theirs, where: str = "") -> tuple[str, object, object] | None:
    """The first key (dotted) at which two definitions differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in list(ours) + [k for k in theirs if k not in ours]:
            path = f"{where}.{key}" if where else str(key)
            if key not in theirs:
                return path, ours[key], "(absent)"
            if key not in ours:
                return path, "(absent)", theirs[key]
            found = first_difference(ours[key], theirs[key], path)
            if found:
                return found
        return None
    return None if ours == theirs else (where or "(the whole definition)", ours, theirs)


def write_definition(store: Store, definition: dict, only_if_absent: bool = False) -> None:
    """The definition into the store (created there whole, then renamed into place)."""
    # ln: of two sites recording theirs at once, the first stays (and the other compares)
    place = (
        f'{{ ln "$t" {layout.STORE_DEFINITION} 2>/dev/null; rm -f "$t"; }}'
        if only_if_absent
        else f'mv -f "$t" {layout.STORE_DEFINITION}'
    )
    # on its input, not its command line: a campaign of 10,000 systems is megabytes
    store.run_script(
        f't=$(mktemp .definition.XXXXXX) && cat > "$t" && {place}',
        "recording the campaign's definition in the store",
        stdin=json.dumps(definition, sort_keys=True) + "\n",
    )


def read_definition(store: Store) -> dict | None:
    """The store's copy, or None where there is none yet."""
    text = store.run_script(
        f"[ -f {layout.STORE_DEFINITION} ] && cat {layout.STORE_DEFINITION} || true",
        "reading the campaign's definition from the store",
    )
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None  # not ours (or cut short): the next deploy rewrites it


def check_definition(campaign: Campaign, store: Store, config_file: str) -> None:
    """Refuse a site's run whose definition differs from the store's; the first site
    to run records it where there is none."""
    ours = campaign_definition(campaign)
    stored = read_definition(store)
    if stored is None:
        write_definition(store, ours, only_if_absent=True)
        stored = read_definition(store) or ours
    found = first_difference(ours, stored)
    if found:
        key, here, there = found
        raise CampaignError(
            f"{config_file}: site {campaign.site} has another campaign definition than the store's copy "
            f"({key}: {_short(here)} here, {_short(there)} in the store), and sites must run one definition: "
            "run `mdcampaign sites deploy` where the campaign is edited, which brings every site to it"
        )


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
