"""The players' prompts, as chat messages. Short on purpose: on CPU every prompt token costs.

The markers they ask for ("Answer: <letter>", "Verdict: CORRECT|INCORRECT") are what
players/parsing.py looks for first. Both ask for a short quote from the story as
<quote>...</quote>, shown once by a made-up example: the judge is told which quotes really are
in the story (referees/quotes.py).
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


# One made-up worked example per player, shown as an earlier chat turn: the 135M embedded
# model copies a format it has seen answered far more often than one it is only told about.
EXAMPLE_STORY = "Lena missed the bus, so she walked to the market in the rain."
EXAMPLE_QUESTION = "How did Lena get to the market?"
EXAMPLE_CHOICES = ("By bus", "On foot")
EXAMPLE_POLICY_REPLY = "Answer: B, because <quote>she walked to the market</quote>."
EXAMPLE_ANSWER_TO_CHECK = "Answer: A, she took the bus."
EXAMPLE_MONITOR_REPLY = "Verdict: INCORRECT, because <quote>she walked to the market</quote>."


def _question_text(story: str, question: str, choices: Sequence[str]) -> str:
    return f"Story:\n{story}\n\nQuestion: {question}\n{format_choices(choices)}"


def policy_messages(story: str, question: str, choices: Sequence[str]) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": (
                "You answer a question about a story: 'Answer: X' with X the letter of your "
                "choice, then a short quote from the story that supports it, as <quote>...</quote>."
            ),
        },
        {"role": "user", "content": _question_text(EXAMPLE_STORY, EXAMPLE_QUESTION, EXAMPLE_CHOICES)},
        {"role": "assistant", "content": EXAMPLE_POLICY_REPLY},
        {"role": "user", "content": _question_text(story, question, choices)},
    ]


def monitor_messages(
    story: str, question: str, choices: Sequence[str], policy_output: str
) -> list[dict[str, str]]:
    def to_check(story: str, question: str, choices: Sequence[str], answer: str) -> str:
        return f"{_question_text(story, question, choices)}\n\nAnswer to check:\n{answer}"

    return [
        {
            "role": "system",
            "content": (
                "You check another assistant's answer to a question about a story: 'Verdict: "
                "CORRECT' or 'Verdict: INCORRECT', then a short quote from the story that shows "
                "it, as <quote>...</quote>."
            ),
        },
        {"role": "user", "content": to_check(EXAMPLE_STORY, EXAMPLE_QUESTION, EXAMPLE_CHOICES, EXAMPLE_ANSWER_TO_CHECK)},
        {"role": "assistant", "content": EXAMPLE_MONITOR_REPLY},
        {"role": "user", "content": to_check(story, question, choices, policy_output)},
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
