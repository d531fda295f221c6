"""Reading the campaign's config: YAML files read strictly, values given on Snakemake's
command line, and paths with ``~`` and environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import CampaignError

# libyaml's parser where PyYAML has it; the constructor (where keys are checked) is Python.
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """A safe loader that refuses a key given twice in one mapping: PyYAML would keep
    the last value silently, so a second `protocol:` block would replace the first."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}  # key -> the line it was first given on
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(Exception):
    def __init__(self, key, first_line: int, second_line: int):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


def load_yaml_strict(text: str, label: str) -> Any:
    """Parse YAML text; a syntax error or a duplicated key becomes one line naming
    ``label`` and the line(s)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except DuplicateKey as duplicate:
        raise CampaignError(
            f"{label}, line {duplicate.second_line}: key '{duplicate.key}' is given twice (first on line "
            f"{duplicate.first_line}); YAML would silently keep only the last one: merge the two"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise CampaignError(f"{label}{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None


def read_user_text(path: Path | str, label: str, kind: str, missing: str) -> str:
    """A text file the user gave (UTF-8, a byte-order mark allowed); a file that is
    missing, a folder or binary becomes one line: '<label>: <missing>', or that it is
    not ``kind``."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CampaignError(f"{label}: {missing}") from None
    except IsADirectoryError:
        raise CampaignError(f"{label}: is a directory, expected {kind}") from None
    except UnicodeDecodeError:
        raise CampaignError(f"{label}: not a text file (expected {kind})") from None


def read_config_file(path: Path | str) -> dict:
    """Parse a config YAML file; a syntax error becomes one line with its position."""
    path = Path(path)
    text = read_user_text(
        path,
        str(path),
        "a YAML config file",
        "config file not found (run from the campaign directory or give its path)",
    )
    config = load_yaml_strict(text, str(path))
    if not isinstance(config, dict):
        raise CampaignError(f"{path}: expected a mapping of keys to values at the top level")
    return config


def report_requested(argv: list[str]) -> bool:
    """Whether Snakemake was asked for a report (`--report`, `--report FILE`,
    `--report=FILE`, `--reporter PLUGIN`, also abbreviated as argparse allows): the
    plan must then hold every simulation's analysis, finished or not."""
    for arg in argv:
        if arg == "--":
            break
        option = arg.split("=", 1)[0]
        if len(option) > len("--rep") and any(name.startswith(option) for name in ("--report", "--reporter")):
            return True
    return False


def command_line_values(values: Mapping) -> dict:
    """Snakemake's ``--config key={nested: value}`` arrives with every nested value as
    text (it reads them with YAML's base loader); read those texts as Snakemake reads
    top-level values (integer, number, true/false), as a config file would have them."""
    return {key: _parse_nested(value) if isinstance(value, Mapping) else value for key, value in values.items()}


def _parse_nested(value):
    if isinstance(value, Mapping):
        return {key: _parse_nested(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_parse_nested(item) for item in value]
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<name>[A-Za-z_][A-Za-z0-9_]*))")


def expand_path(text: str, where: str) -> str:
    """``~`` and ``$NAME``/``${NAME}`` expanded as a shell would (TACC users write
    ``$SCRATCH/...``); an unset variable is an error naming it, never an empty string.
    Any other ``$`` stays literal."""

    def value(match: re.Match) -> str:
        name = match["braced"] or match["name"]
        if name not in os.environ:
            raise CampaignError(
                f"{where}: environment variable ${name} is not set on this machine (set it, or write the path in full)"
            )
        return os.environ[name]

    return os.path.expanduser(_VARIABLE.sub(value, text))
