"""Plain-TOML configs with a schema version (nerfstudio's pickled YAML stops loading after upgrades;
TOML of plain values does not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if v is None:
        raise ValueError("TOML has no null; drop the key instead")
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(doc: dict) -> str:
    """Serialise a dict of plain values and (one level of nested) tables to TOML text."""
    lines, tables = [], []
    for key, value in doc.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.append(f"{key} = {{ {', '.join(f'{k} = {_value(v)}' for k, v in value.items())} }}")
            elif value is not None:
                lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def load_toml(path: Path) -> dict:
    """Read a TOML file."""
    with open(path, "rb") as fh:
        return tomllib.load(fh)
