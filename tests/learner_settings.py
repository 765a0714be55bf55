"""PPO settings for tests: what a run of the default config builds, with a test's changes.

    PPOLearner(policy, learner_settings(learning_rate=1e-2, minibatch_size=2))

PPOSettings has no defaults of its own (the config models hold them), so tests start from
the settings engine.game builds for the default config and change what they exercise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.config import RunConfig
from engine.game import ppo_settings
from engine.ppo import PPOSettings


def learner_settings(**changes: Any) -> PPOSettings:
    return dataclasses.replace(ppo_settings(RunConfig(), "policy"), **changes)
