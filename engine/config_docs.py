"""docs/config.md, generated from the config models: every key, its type, default and meaning.

    python -m engine.config_docs > docs/config.md

The pydantic models (engine/config.py, players/config.py, referees/config.py, engine/data.py)
are the one place a setting, its default, its range and its description live; this page is
written from them, and tests/test_config_docs.py fails when the checked-in page is stale.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from engine.config import RunConfig

_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"))


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    found = []
    for constraint in field.metadata:
        for name, symbol in _BOUNDS:
            value = getattr(constraint, name, None)
            if value is not None:
                found.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(name: str, model: type[BaseModel], description: str) -> list[str]:
    lines = [f"## [{name}]", "", description, ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    subtables: list[str] = []
    for key, field in model.model_fields.items():
        if _is_table(field):  # e.g. [logging.wandb]: its own section after this one
            assert isinstance(field.annotation, type)
            subtables += _section(f"{name}.{key}", field.annotation, field.description or "")
            continue
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        type_cell = f"{kind} ({bounds})" if bounds else kind
        lines.append(f"| `{key}` | {_cell(type_cell)} | {_cell(_default(field))} | {_cell(field.description or '')} |")
    return lines + [""] + subtables


def _is_table(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def config_reference() -> str:
    """The whole page: top-level keys first, then one section per table, in file order."""
    top = [
        "# Config reference",
        "",
        "Generated from the config models by `python -m engine.config_docs > docs/config.md`;",
        "do not edit by hand. A config file is TOML (or JSON) with these keys; unknown keys, values",
        "of the wrong kind (`true` for a number, `\"4\"` for an integer) and non-finite numbers are",
        "refused with a one-line message naming the key. `configs/tiny.toml` is a complete example.",
        "",
        "## Top level",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    sections: list[str] = []
    for key, field in RunConfig.model_fields.items():
        if _is_table(field):
            assert isinstance(field.annotation, type)
            sections += _section(key, field.annotation, field.description or "")
        else:
            bounds = _bounds(field)
            kind = _type_name(field.annotation) + (f" ({bounds})" if bounds else "")
            top.append(f"| `{key}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(field.description or '')} |")
    return "\n".join([*top, "", *sections]).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(config_reference())
