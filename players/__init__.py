"""Players: model loading, shared bases with named LoRA adapters, rollout backends, prompts, parsing.

The config, prompts and parsing import eagerly; the names that need torch, transformers and
peft (ModelPool, Player, ...) import on first use, so that reading a config or a run's log
(`minmax-engine sql`, `verify`, the config models) never loads them.
"""

from typing import Any

from players.config import PlayerConfig
from players.parsing import parse_answer, parse_verdict
from players.prompts import monitor_messages, policy_messages

_LAZY = {
    "ModelPool": "players.models",
    "SharedBase": "players.models",
    "Generation": "players.player",
    "Player": "players.player",
    "BackendSpec": "players.backend",
    "RolloutBackend": "players.backend",
    "SampledTokens": "players.backend",
    "SamplingSettings": "players.backend",
    "TransformersBackend": "players.backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'players' has no attribute {name!r}")


__all__ = [
    "BackendSpec",
    "Generation",
    "ModelPool",
    "Player",
    "PlayerConfig",
    "RolloutBackend",
    "SampledTokens",
    "SamplingSettings",
    "SharedBase",
    "TransformersBackend",
    "monitor_messages",
    "parse_answer",
    "parse_verdict",
    "policy_messages",
]
