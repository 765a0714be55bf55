"""How many tokens of story fit: what data.max_story_tokens defaults to when a config leaves
it unset.

Every model that reads the story (the policy, the monitor in minmax mode, the judge when it
sees the story) must hold its whole prompt plus what is generated into it: the policy's
answer, and for the monitor its own critique too. The budget is the smallest room any of
them has left, measured with each model's own tokenizer and chat template on the longest
question and choices of the dataset, less a small margin (a story tokenised inside a prompt
can take a token or two more than alone, at its seams). Stories are cut in the policy's
tokens, so a model with another tokenizer has its room converted at the rate the two count
the dataset's longest story.

    budget = story_budget(table, config, dataset.states)   # None: no context length known
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.data import State
from players.prompts import monitor_messages, policy_messages
from storage.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from engine.config import RunConfig
    from engine.round import Table
    from players.models import SharedBase

SEAM_MARGIN = 8  # tokens
# Config attributes that name a model's context length, in the order transformers models use them.
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class StoryBudget:
    tokens: int
    role: str  # the role whose model leaves the least room
    model: str
    context: int


def context_length(model: object) -> int | None:
    """The model's context window in tokens, when its config states one."""
    config = getattr(model, "config", None)
    for attribute in CONTEXT_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def story_budget(table: Table, config: RunConfig, states: Sequence[State]) -> StoryBudget | None:
    """The smallest story room any story-reading model has; None when no model states its
    context length (stories are then kept whole)."""
    if not states:
        return None
    longest = max(states, key=lambda state: len(state.question) + sum(len(choice) for choice in state.choices))
    question, choices = longest.question, longest.choices
    answer_tokens = config.policy.max_new_tokens
    rooms: list[tuple[str, str, int, int]] = []  # role, model, context, tokens left for the story
    policy = table.policy
    # Stories are cut in the policy's tokens; a model with another tokenizer has its room
    # converted at the rate the two tokenizers count the longest story.
    sample = max((state.story for state in states), key=len)
    policy_count = max(_count(policy.tokenizer, sample), 1)

    def measure(role: str, spec: str, base: SharedBase, prompt_tokens: int, generated: int) -> None:
        context = context_length(base.model)
        if context is None:
            return
        room = context - prompt_tokens - generated - SEAM_MARGIN
        if base.tokenizer is not policy.tokenizer and room > 0:
            room = room * policy_count // max(_count(base.tokenizer, sample), 1)
        rooms.append((role, spec, context, room))

    policy_prompt = policy.encode_prompt(policy.render_prompt(policy_messages("", question, choices)))
    measure("policy", config.policy.model, policy.base, len(policy_prompt), answer_tokens)
    if table.monitor is not None:
        monitor = table.monitor
        monitor_prompt = monitor.encode_prompt(monitor.render_prompt(monitor_messages("", question, choices, "")))
        measure("monitor", config.monitor.model, monitor.base, len(monitor_prompt),
                answer_tokens + config.monitor.max_new_tokens)
    if config.judge.sees_story:
        critique = "" if table.monitor is not None else None
        judge_prompt = table.judge.prompt_ids("", question, choices, "", critique)
        critique_tokens = config.monitor.max_new_tokens if table.monitor is not None else 0
        measure("judge", config.judge.model, table.judge.reader.base, len(judge_prompt),
                answer_tokens + critique_tokens)
    if not rooms:
        return None
    role, spec, context, tokens = min(rooms, key=lambda room: room[3])
    if tokens < 1:
        raise UserError(
            f"[{role}] model {spec!r}: its context of {context} tokens leaves no room for a story "
            "after the prompt and the generation budget; lower max_new_tokens or use a model "
            "with a longer context"
        )
    return StoryBudget(tokens=tokens, role=role, model=spec, context=context)
