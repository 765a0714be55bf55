"""Referees: the frozen reward model and judge that score a round.

The configs import eagerly; Judge and RewardModel (torch, transformers) on first use, so
that the run config can be read without loading them.
"""

from typing import Any

from referees.config import JudgeConfig, RewardConfig


def __getattr__(name: str) -> Any:
    if name == "Judge":
        from referees.judge import Judge

        return Judge
    if name == "RewardModel":
        from referees.reward import RewardModel

        return RewardModel
    raise AttributeError(f"module 'referees' has no attribute {name!r}")


__all__ = ["Judge", "JudgeConfig", "RewardConfig", "RewardModel"]
