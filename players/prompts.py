"""The players' prompts, as chat messages. Short on purpose: on CPU every prompt token costs.

The endings they ask for ("Answer: <letter>", "Verdict: CORRECT|INCORRECT") are what
players/parsing.py looks for first.
"""

from __future__ import annotations

from collections.abc import Sequence

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
                "from the story, then a last line 'Answer: X' where X is the letter of your choice."
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
                "two sentences of critique based on the story, then a last line "
                "'Verdict: CORRECT' or 'Verdict: INCORRECT'."
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
