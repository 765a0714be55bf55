"""Players: model loading, shared bases with named LoRA adapters, generation, prompts, parsing."""

from players.config import PlayerConfig
from players.models import ModelPool, SharedBase
from players.packing import PackedBatch, pack_sequences
from players.parsing import parse_answer, parse_verdict
from players.player import Generation, Player
from players.prompts import monitor_messages, policy_messages

__all__ = [
    "Generation",
    "ModelPool",
    "PackedBatch",
    "Player",
    "PlayerConfig",
    "SharedBase",
    "monitor_messages",
    "pack_sequences",
    "parse_answer",
    "parse_verdict",
    "policy_messages",
]
