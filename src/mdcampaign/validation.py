"""JSON-schema validation with defaults, and one-line messages for users.

The schemas live in ``workflow/schemas/``. Defaults are filled in the way
``snakemake.utils.validate`` fills them (a ``properties`` validator that sets each
missing key's ``default``), but errors are reported as a single line that names the
file, the key or row, what is allowed and what was given, instead of jsonschema's
multi-line report.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

from .errors import CampaignError
from .shipped import SCHEMAS

# libyaml's loader, where PyYAML has it: the schemas are read at every start.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load_yaml(stream):
    """yaml.safe_load, with the C loader when available (same results, ~10x faster)."""
    return yaml.load(stream, Loader=_YAML_LOADER)


@cache
def load_schema(name: str, schema_dir: str | None = None) -> dict:
    path = Path(schema_dir) if schema_dir else SCHEMAS
    with open(path / name) as handle:
        return safe_load_yaml(handle)


def schema_defaults(*section: str) -> dict:
    """The defaults the config schema gives the keys of a section (``"pulling"``,
    ``"protocol"``, ...): the one place defaults are written."""
    schema = load_schema("config.schema.yaml")
    for name in section:
        schema = schema["properties"][name]
    return {key: _copy(sub["default"]) for key, sub in schema["properties"].items() if "default" in sub}


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, _copy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _anchored_pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` searches; Python's `$` also matches before a final
    newline, so "name\n" would pass "^...$". An anchored pattern must match the whole
    text."""
    if not validator.is_type(instance, "string"):
        return
    match = re.search(pattern, instance)
    if match is None or (pattern.endswith("$") and match.end() != len(instance)):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_finite_number(checker, instance) -> bool:
    return Draft202012Validator.TYPE_CHECKER.is_type(instance, "number") and (
        not isinstance(instance, float) or math.isfinite(instance)
    )


# NaN and infinity are YAML numbers (.nan, .inf) and table cells (nan, inf); nothing
# physical is either, and they would pass every bound (NaN compares false).
_FINITE_NUMBERS = Draft202012Validator.TYPE_CHECKER.redefine("number", _is_finite_number)
_StrictValidator = validators.extend(Draft202012Validator, {"pattern": _anchored_pattern}, type_checker=_FINITE_NUMBERS)
_DefaultingValidator = _with_defaults(_StrictValidator)


def _copy(value):
    return copy.deepcopy(value)


def validate(data: dict, schema: dict, where: str, fill_defaults: bool = True, key_word: str = "") -> dict:
    """Validate ``data`` in place (filling defaults) or raise a one-line CampaignError.

    ``where`` names the source for the message, e.g. ``config/config.yaml`` or
    ``config/systems.tsv, line 3 (id 'villin')``; ``key_word`` names what a key is
    called there (``column`` for table rows), giving "..., column replicas: ...".
    """
    problem = non_text_key(data)
    if problem:
        raise CampaignError(f"{where}: {problem}")
    validator_class = _DefaultingValidator if fill_defaults else _StrictValidator
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(data), key=_error_rank)
    if errors:
        error = errors[0]
        location = key_path(error)
        if location and key_word:
            raise CampaignError(f"{where}, {key_word} {location}: {describe_error(error, with_location=False)}")
        raise CampaignError(f"{where}: {describe_error(error)}")
    _integers_as_int(data, schema)
    return data


def non_text_key(data, path: tuple = ()) -> str | None:
    """The first mapping key (at any depth) that is not text, described for the user,
    or None. YAML reads `1:`, `2.5:`, `yes:` or `null:` as a number, a boolean or
    nothing; keys name sites, sections and options, and are joined, sorted and put in
    paths as text."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                where = ".".join(path) + ": " if path else ""
                if key is None:
                    return f"{where}a key is empty (or null/~), not a name; give the name, in quotes if needed"
                if isinstance(key, bool):
                    return (
                        f"{where}key {key} is read by YAML as true/false (from yes, no, on, off, true or false), "
                        "not as a name; keys must be text: put it in quotes"
                    )
                return (
                    f"{where}key {key!r} is read by YAML as {'a number' if isinstance(key, (int, float)) else 'a ' + type(key).__name__}, "
                    f"not as a name; keys must be text: put it in quotes ('{key}') or start it with a letter"
                )
            problem = non_text_key(value, (*path, key))
            if problem:
                return problem
    elif isinstance(data, list):
        for index, item in enumerate(data):
            problem = non_text_key(item, (*path[:-1], f"{path[-1] if path else ''}[{index}]"))
            if problem:
                return problem
    return None


def _integers_as_int(data: dict, schema: dict) -> None:
    """JSON Schema counts 2.0 as an integer; make it the int 2 that the code expects
    (as a count, a seed or a range bound)."""
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, value in data.items():
        subschema = properties.get(key, extra if isinstance(extra, dict) else None)
        if not subschema:
            continue
        if subschema.get("type") == "integer" and isinstance(value, float):
            data[key] = int(value)
        elif isinstance(value, dict):
            _integers_as_int(value, subschema)


def _error_rank(error: jsonschema.ValidationError):
    # Report unknown/missing keys before type problems, and shallow paths first,
    # so that the single line shown is the most useful one.
    order = {"additionalProperties": 0, "required": 1}
    return (order.get(error.validator, 2), len(error.absolute_path))


def key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def describe_error(error: jsonschema.ValidationError, with_location: bool = True) -> str:
    """Render a jsonschema error as 'key: what is allowed (got X)'."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    location = key_path(error)
    prefix = f"{location}: " if location and with_location else ""
    got = f"(got {error.instance!r})"
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed))
        unknown = extras[0] if extras else "?"
        return f"{prefix}unknown key '{unknown}'{suggest(unknown, allowed)}; allowed keys: {', '.join(allowed)}"
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{prefix}missing required key '{missing}'"
    if kind == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{prefix}must be one of: {allowed} {got}{suggest(str(error.instance), [str(v) for v in error.validator_value])}"
    if kind == "type":
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return f"{prefix}must be a finite number {got}"
        return f"{prefix}must be {_article(error.validator_value)} {got}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        symbol = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"{prefix}must be {symbol} {error.validator_value} {got}"
    if kind == "pattern":
        # each pattern says in words what it allows (the schema's x-allowed), else it is a name's
        if "x-allowed" in schema:
            return f"{prefix}must be {schema['x-allowed']} {got}"
        return f"{prefix}must contain only letters, digits, '_', '.' and '-', and start with a letter or digit {got}"
    if kind in ("maxLength", "minLength"):
        word = "at most" if kind == "maxLength" else "at least"
        return f"{prefix}must be {word} {error.validator_value} characters long {got}"
    return f"{prefix}{error.message}"


def _article(type_name) -> str:
    if isinstance(type_name, list):
        return " or ".join(_article(t) for t in type_name)
    return {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "string": "a text value",
        "object": "a mapping of keys to values",
        "array": "a list",
    }.get(type_name, str(type_name))


def suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def coerce_cell(text: str, subschema: dict) -> Any:
    """Convert a table cell to the type its schema asks for; leave it as text if it
    does not parse, so that validation reports the original value."""
    kinds = subschema.get("type")
    if kinds is None and "enum" in subschema:
        return text
    kinds = kinds if isinstance(kinds, list) else [kinds]
    for kind in kinds:
        try:
            if kind == "integer":
                value = float(text)
                if value.is_integer() and "." not in text and "e" not in text.lower():
                    return int(value)
            elif kind == "number":
                return float(text)
            elif kind == "boolean":
                lowered = text.strip().lower()
                if lowered in ("true", "yes", "1"):
                    return True
                if lowered in ("false", "no", "0"):
                    return False
        except ValueError:
            continue
    return text
