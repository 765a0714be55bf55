"""The players' prompts, as chat messages. Short on purpose: on CPU every prompt token costs.

The endings they ask for ("Answer: <letter>", "Verdict: CORRECT|INCORRECT") are what
players/parsing.py looks for first. Both invite short quotes from the story as
<quote>...</quote>: the judge is told which of them really are in it (referees/quotes.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def choice_letter(index: int) -> str:
    return LETTERS[index]


def format_choices(choices: Sequence[str]) -> str:
    """One choice per line: "A) the baker"."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"need 2 to {len(LETTERS)} choices, got {len(choices)}")
    return "\n".join(f"{choice_letter(index)}) {choice}" for index, choice in enumerate(choices))


def policy_messages(story: str, question: str, choices: Sequence[str]) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": (
                "You answer a question about a story. Give one or two sentences of reasoning "
                "from the story, quoting it briefly as <quote>...</quote>, then a last line "
                "'Answer: X' where X is the letter of your choice."
            ),
        },
        {
            "role": "user",
            "content": f"Story:\n{story}\n\nQuestion: {question}\n{format_choices(choices)}",
        },
    ]


def monitor_messages(
    story: str, question: str, choices: Sequence[str], policy_output: str
) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": (
                "You check another assistant's answer to a question about a story. Give one or "
                "two sentences of critique based on the story, quoting it briefly as "
                "<quote>...</quote>, then a last line 'Verdict: CORRECT' or 'Verdict: INCORRECT'."
            ),
        },
        {
            "role": "user",
            "content": (
                f"Story:\n{story}\n\nQuestion: {question}\n{format_choices(choices)}\n\n"
                f"Answer to check:\n{policy_output}"
            ),
        },
    ]


# --- messages -> prompt text -> ids: the one rule for players and referees alike ---------------


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], *, generation_prompt: bool = True
) -> str:
    """Messages as prompt text: the tokenizer's chat template when it has one, else plain
    "role: content" turns; `generation_prompt` opens the assistant's turn after them."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    turns = "\n\n".join(f"{message['role']}: {message['content']}" for message in messages)
    return turns + "\n\nassistant:" if generation_prompt else turns


def encode_rendered(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of text from render_chat. A chat template already writes the special tokens it
    wants (BOS included), so the tokenizer adds its own only to plain turns."""
    return list(tokenizer(text, add_special_tokens=not tokenizer.chat_template)["input_ids"])
