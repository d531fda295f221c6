"""The references that are generated, never written by hand: the configuration
reference from the schemas, and the repository map from the modules' docstrings.

Every key of `config/config.yaml` and every column of `config/systems.tsv` is
described once, in `workflow/schemas/` (its type, bounds, default and `description`);
the reference users read (`config/README.md`, also the documentation's configuration
page) is made from them here. Every module says what it is in its docstring's first
sentence; `docs/repository.md` lists them. A test fails when either file differs from
what this makes. Edit the schemas or the docstrings, then run::

    python -m mdcampaign.reference            # rewrites config/README.md and docs/repository.md
    python -m mdcampaign.reference --check    # exit 1 if one is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .validation import load_schema

GENERATED_NOTE = (
    "<!-- Generated from workflow/schemas/ by `python -m mdcampaign.reference`: edit the schemas "
    "(each key's description), then run it. A test fails when this file is out of date. -->"
)

INTRO = """# Configuring a campaign

A campaign is two files, and nothing else needs editing:

- `config/config.yaml`: the campaign's name, where results go, and the default
  **protocol** of every system;
- `config/systems.tsv`: one row per system (a structure to simulate), with the number
  of replicas and, optionally, per-system overrides of any protocol key.

One simulation is one (system, replica) pair, named `<system id>/r<replica>` (for
example `villin/r2`); that name is also its folder below `results/sims/`.

Both files are checked against JSON schemas (`workflow/schemas/`, from which this page
is generated) before anything runs; a mistake stops the run with one line that names
the file, the line or key, and what is allowed, for example:

```
mdcampaign: config/systems.tsv, line 4 (id 'villin'), column replicas: must be >= 1 (got 0)
mdcampaign: config/config.yaml: protocol.forcefield: must be one of: amber14, amber99sbildn, charmm36 (got 'amber99')
```

`mdcampaign validate` runs the same checks without Snakemake and prints what the
campaign contains. Numbers must be finite (`.nan`/`.inf` in YAML and `nan`/`inf` in a
table are refused) and within the bounds below, which are generous physical sense
rather than policy: a value outside them is almost certainly a typo. A key given twice
in one YAML mapping is an error naming both lines (YAML would silently keep the last),
and every key must be text (YAML reads `1:` or `yes:` as a number or true).
"""

PROTOCOL_INTRO = """Every key may be set under `protocol:` in `config.yaml` (the campaign default), as
a column of the same name in `systems.tsv` (that system only; an empty cell keeps the
default), or on the command line (`snakemake ... --config 'protocol={target_ns: 50}'`).
Once a simulation has started its protocol is fixed: the workflow refuses to continue
it under a different temperature, timestep and so on (it says which key changed and
how to start over); only `target_ns` and `checkpoint_interval_ps` may change.
"""

SYSTEMS_INTRO = """Tab-separated, one header line, one row per system. Blank lines and lines starting
with `#` are ignored; errors name the line as an editor shows it. Empty columns after
the last named one (as spreadsheets export them) are ignored; a row typed with spaces
instead of tabs is refused with that hint. `NA` (as R writes an empty cell) keeps the
default, except in `id` and `structure`, where it is a name. Besides the columns
below, a row may carry any protocol key as a column.
"""


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def allowed(schema: dict) -> str:
    """What a key accepts, in words, from its schema."""
    if schema.get("x-values") == "engines":
        from .engines import ENGINES

        return ", ".join(f"`{name}`" for name in ENGINES)
    if "x-allowed" in schema:
        return schema["x-allowed"]
    if "enum" in schema:
        return ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return "`true`, `false`"
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        left = "(" if "exclusiveMinimum" in schema else "["
        right = ")" if "exclusiveMaximum" in schema else "]"
        words = "integer " if kind == "integer" else ""
        if low is not None and high is not None:
            return f"{words}{left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f"{words}{'>' if left == '(' else '>='} {_number(low)}"
        return words.strip() or "number"
    if kind == "string":
        if "pattern" in schema:
            return "letters, digits, `_`, `.`, `-` (starting with a letter or digit)"
        return "text"
    if kind == "array":
        items = schema.get("items", {})
        return f"a list of: {allowed(items)}" if items else "a list"
    if kind == "object":
        return "a mapping"
    return ""


def default(schema: dict) -> str:
    if "default" not in schema:
        return ""
    value = schema["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "(empty)"
    if value == {}:
        return "`{}`"
    if isinstance(value, list):
        return f"`[{', '.join(map(str, value))}]`"
    return f"`{_number(value)}`"


def _meaning(schema: dict) -> str:
    """A key's description; for the engine, each engine's own summary after it."""
    text = schema.get("description", "")
    if schema.get("x-values") == "engines":
        from .engines import ENGINES

        text += " " + " ".join(f"`{name}`: {engine.summary}" for name, engine in ENGINES.items())
    return text


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _rows(properties: dict, prefix: str = "", skip=()) -> list[tuple[str, dict]]:
    """(dotted key, schema) for every key, nested mappings with named keys unfolded."""
    rows = []
    for key, schema in properties.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        rows.append((name, schema))
        if schema.get("type") == "object" and "properties" in schema:
            rows += _rows(schema["properties"], f"{name}.")
        elif isinstance(schema.get("additionalProperties"), dict) and "properties" in schema["additionalProperties"]:
            rows += _rows(schema["additionalProperties"]["properties"], f"{name}.<name>.")
    return rows


def _table(rows: list[tuple[str, dict]], required=(), first: str = "key") -> str:
    lines = [f"| {first} | default | allowed | meaning |", "|---|---|---|---|"]
    for name, schema in rows:
        value = "(required)" if name in required else default(schema)
        lines.append(f"| `{name}` | {_cell(value)} | {_cell(allowed(schema))} | {_cell(_meaning(schema))} |")
    return "\n".join(lines) + "\n"


def reference(schema_dir: str | None = None) -> str:
    """The whole reference, as Markdown."""
    config = load_schema("config.schema.yaml", schema_dir)
    systems = load_schema("systems.schema.yaml", schema_dir)
    protocol = config["properties"]["protocol"]
    parts = [
        GENERATED_NOTE,
        "",
        INTRO,
        "## config/config.yaml",
        "",
        _table(_rows(config["properties"], skip=("protocol",)), required=config.get("required", ())),
        "## Protocol keys",
        "",
        PROTOCOL_INTRO,
        _table(_rows(protocol["properties"])),
        "## config/systems.tsv",
        "",
        SYSTEMS_INTRO,
        _table(_rows(systems["properties"]), required=systems.get("required", ()), first="column"),
    ]
    return "\n".join(parts)


REFERENCE_FILE = Path("config") / "README.md"
MAP_FILE = Path("docs") / "repository.md"
# The repository's folders besides the package, in the order a newcomer meets them.
FOLDERS = (
    ("config/", "the example campaign (`config.yaml`, `systems.tsv`, structures) and the configuration reference"),
    (
        "profiles/",
        "one Snakemake profile per machine (`local`, `workstation`, `stampede`, `frontera`, `slurm`, `ci-slurm`)",
    ),
    ("workflow/Snakefile", "includes the rule files and nothing else"),
    ("workflow/rules/", "one `.smk` file per stage; wiring to the package in `common.smk`"),
    ("workflow/schemas/", "the JSON schemas of the config and the systems table: the one description of every key"),
    ("workflow/report/", "captions of `snakemake --report`"),
    ("scripts/", "thin entry points the rules run (`job.py RULE SPEC`, `setup.py`, `summary.py`)"),
    ("scripts/ci/", "start and stop the test Slurm cluster and SSH server (`.ci/run` uses them)"),
    ("src/mdcampaign/", "the package that does the work, listed below"),
    ("tests/", "the test suite; `tests/data/` holds real structures (with provenance) and the bad-input corpus"),
    ("benchmarks/", "planning, status, packing, pulling, engine and physics benchmarks, with their latest results"),
    ("examples/", "more campaigns to run as they are (`real-structures/`)"),
    ("docs/", "these pages; `mkdocs.yml` at the top"),
)


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def repository_map(package: Path | None = None) -> str:
    """The repository map: its folders, and every module of the package with the first
    sentence of its docstring."""
    import ast

    package = Path(package) if package else Path(__file__).resolve().parent
    lines = [
        "<!-- Generated by `python -m mdcampaign.reference` from each module's docstring: edit those, then run "
        "it. A test fails when this file is out of date. -->",
        "",
        "# Repository map",
        "",
        "| path | what |",
        "|---|---|",
        *(f"| `{path}` | {what} |" for path, what in FOLDERS),
        "",
        "## The package",
        "",
        "Layers import only downward: the engines know nothing of the workflow, planning imports no MD",
        "engine, and `engines/<name>/` holds everything one engine knows.",
        "",
        "| module | what |",
        "|---|---|",
    ]
    for path in sorted(package.rglob("*.py"), key=lambda p: (len(p.relative_to(package).parts), str(p))):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        relative = path.relative_to(package.parent.parent).as_posix()
        lines.append(f"| `{relative}` | {_cell(_first_sentence(docstring))} |")
    return "\n".join(lines) + "\n"


GENERATED = {REFERENCE_FILE: reference, MAP_FILE: repository_map}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdcampaign.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    parser.add_argument("--root", default=".", help="the repository (default: here)")
    args = parser.parse_args(argv)
    stale = []
    for relative, make in GENERATED.items():
        path = Path(args.root) / relative
        text = make()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(relative))
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}: run python -m mdcampaign.reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
