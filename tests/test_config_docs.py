"""docs/config.md is generated from the config models, and every setting says what it means."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from engine.config import RunConfig
from engine.config_docs import config_reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield prefix + name, field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def test_every_setting_has_a_one_line_description() -> None:
    undescribed = [key for key, field in _fields(RunConfig) if not (field.description or "").strip()]
    assert undescribed == []
    multiline = [key for key, field in _fields(RunConfig) if "\n" in (field.description or "")]
    assert multiline == []


def test_docs_config_md_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == config_reference(), (
        "docs/config.md is stale: run `python -m engine.config_docs > docs/config.md`"
    )


def test_the_page_lists_every_key_with_its_default() -> None:
    page = config_reference()
    config = RunConfig()
    assert "| `ppo_epochs` | int (≥ 1) | `2` |" in page
    assert f"| `lambda_init` | float (≥ 0) | `{config.lagrangian.lambda_init}` |" in page
    for key, _ in _fields(RunConfig):
        assert f"`{key.rsplit('.', 1)[-1]}`" in page or f"[{key}]" in page, key
