"""Referees: the frozen reward model and judge that score a round."""

from referees.config import JudgeConfig, RewardConfig
from referees.judge import Judge
from referees.reward import RewardModel

__all__ = ["Judge", "JudgeConfig", "RewardConfig", "RewardModel"]
