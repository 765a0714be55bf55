"""Verified quotes: a judge who cannot see the story is told which quoted passages are in it.

    marked = mark_quotes(answer, story)   # what the judge reads instead of the answer
    quotes = check_quotes(answer, story)  # [Quote(text, verified, score), ...]

The protocol of the debate experiments on QuALITY (Michael et al. 2023, Khan et al. 2024):
players quote the story as <quote>...</quote>; before the judge reads O or O′ each quote is
checked against the story and rewritten as

    <quote verified>...</quote>      found in the story
    <quote unverified>...</quote>    not found: the judge should not trust it

The check. Both sides are normalised (case folded, every run of whitespace one space, ends
stripped). A quote is verified when its normalised text is a substring of the normalised
story, or else when its best match is close enough: the best `difflib.SequenceMatcher` ratio
between the quote and any run of as many consecutive story words is at least
QUOTE_MATCH_THRESHOLD (0.9). A ratio of 0.9 lets a typo or a dropped letter through (one
changed character in a 40-character quote scores about 0.99) but not a changed word in a
short quote ("the fox ate the bread" for "the fox ate the apple" scores about 0.8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

QUOTE_MATCH_THRESHOLD = 0.9
QUOTE_PATTERN = re.compile(r"<quote>(.*?)</quote>", re.IGNORECASE | re.DOTALL)
VERIFIED_MARK = "<quote verified>"
UNVERIFIED_MARK = "<quote unverified>"


@dataclass(frozen=True)
class Quote:
    text: str  # as the player wrote it, between the tags
    verified: bool
    score: float  # 1.0 for an exact (normalised) match, else the best fuzzy ratio


def normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def find_quotes(text: str) -> list[str]:
    """The non-empty quoted passages in a player's output, in order."""
    return [match.group(1) for match in QUOTE_PATTERN.finditer(text) if match.group(1).strip()]


def match_score(quote: str, story: str) -> float:
    """1.0 when the normalised quote is in the normalised story, else the best ratio over
    story windows of the quote's length in words (0.0 for an empty story)."""
    wanted, haystack = normalised(quote), normalised(story)
    if not wanted:
        return 0.0
    if wanted in haystack:
        return 1.0
    words = haystack.split(" ")
    width = len(wanted.split(" "))
    matcher = SequenceMatcher(autojunk=False)
    matcher.set_seq2(wanted)  # SequenceMatcher caches facts about seq2: the fixed side
    best = 0.0
    for start in range(max(1, len(words) - width + 1)):
        matcher.set_seq1(" ".join(words[start : start + width]))
        # the cheap upper bounds first: most windows cannot beat the best so far
        if matcher.real_quick_ratio() > best and matcher.quick_ratio() > best:
            best = max(best, matcher.ratio())
    return best


def check_quotes(text: str, story: str) -> list[Quote]:
    quotes = []
    for quoted in find_quotes(text):
        score = match_score(quoted, story)
        quotes.append(Quote(text=quoted, verified=score >= QUOTE_MATCH_THRESHOLD, score=score))
    return quotes


def mark_quotes(text: str, story: str) -> str:
    """The text with every quote tagged verified or unverified against the story."""

    def marked(match: re.Match[str]) -> str:
        quoted = match.group(1)
        if not quoted.strip():
            return match.group(0)
        verified = match_score(quoted, story) >= QUOTE_MATCH_THRESHOLD
        return f"{VERIFIED_MARK if verified else UNVERIFIED_MARK}{quoted}</quote>"

    return QUOTE_PATTERN.sub(marked, text)
