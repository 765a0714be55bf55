"""Reading the players' outputs: the policy's chosen answer and the monitor's verdict.

Both parsers return None rather than guess: an unparsed output is recorded as such and
penalised by the engine, never crashes a run. And both refuse an output that states two
different things: every explicit marker ("Answer: B", "Verdict: CORRECT") must agree, so
"Answer: A ... Answer: B" and "Verdict: CORRECT ... Verdict: INCORRECT" are unparsed, not
"the last one wins". Discussion before a marker does not count as a statement ("At first it
looks correct, but ... Verdict: INCORRECT" is INCORRECT).

An answer names a choice by its letter or by its text: "Answer: The head librarian" is the
choice whose text that is, compared after normalising case, whitespace, punctuation and a
leading article. A reply that is a single letter is read as that letter, never as the text
of a one-letter choice.

The verdict words are matched as whole words, so INCORRECT never reads as CORRECT
(`"CORRECT" in "INCORRECT"` is the classic bug), and a negation right before CORRECT
("not correct", "isn't correct") reads as INCORRECT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from players.prompts import LETTERS

# Emphasis and code marks carry no meaning for either parser ("**B**", "`INCORRECT`").
_MARKDOWN = re.compile(r"[*_`~#]")

# "Answer: B", "answer is (b)", "Final answer - option C", "the answer is B."
_ANSWER_MARKER = re.compile(
    r"\banswer\b\s*(?:is\b\s*)?[:=\-–]?\s*(?:(?:option|choice|letter)\s+)?"
    r"(?P<open>[(\[]?)\s*(?P<letter>[A-Za-z])(?![A-Za-z0-9])(?P<after>[^\n]?[^\n]?)",
    re.IGNORECASE,
)
# A response that is nothing but a letter, or whose last line is ("B", "(B).", "B)").
_BARE_LETTER_LINE = re.compile(r"^\s*[(\[]?\s*([A-Z])\s*[)\]]?\s*[.!]?\s*$")
_LABELLED_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])\)\s")
# Where an answer statement starts; its text may be a choice's text rather than its letter.
_ANSWER_WORD = re.compile(r"\banswer\b\s*[:=\-–]?\s*", re.IGNORECASE)
_IS = re.compile(r"is\b\s*[:=\-–]?\s*", re.IGNORECASE)


def _letter_is_intended(letter: str, bracketed: bool, after: str) -> bool:
    """Whether the letter after an answer marker is a choice letter rather than a word.

    "the answer is a dog" and "answer: I think B" start with ordinary words; those letters
    count only when bracketed or followed by punctuation or the end of the text.
    """
    if bracketed:
        return True
    ends_here = after == "" or not after[0].isspace() or after.strip() == ""
    if letter.islower() or letter == "I":
        return ends_here
    return True


_NOT_WORD = re.compile(r"[\W_]+")
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an) ")


def normalised(text: str) -> str:
    """Case, whitespace, punctuation and a leading article removed: "The  Head-Librarian." -> "head librarian"."""
    return _LEADING_ARTICLE.sub("", " ".join(_NOT_WORD.sub(" ", text.lower()).split()))


def _choice_named_by(text: str, choices: Sequence[str]) -> int | None:
    """The one choice whose (normalised) text `text` is; None when none or several are."""
    wanted = normalised(text)
    if not wanted:
        return None
    matches = [index for index, choice in enumerate(choices) if normalised(choice) == wanted]
    return matches[0] if len(matches) == 1 else None


def _line_rest(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start:] if end == -1 else text[start:end]


def _one_choice(candidates: list[int | None]) -> int | None:
    """The choice every statement names; None if any names none or two name different ones."""
    if not candidates or None in candidates or len(set(candidates)) != 1:
        return None
    return candidates[0]


def parse_answer(text: str, choices: Sequence[str]) -> int | None:
    """The chosen choice index (A -> 0), or None when there is none, it is out of range, or
    the output names two different choices."""
    if not text:
        return None
    plain = _MARKDOWN.sub("", text)
    # Explicit statements: every "Answer: <letter>" or "Answer: <a choice's text>".
    stated: list[int | None] = []
    for marker in _ANSWER_WORD.finditer(plain):
        rest = _line_rest(plain, marker.end())
        named = _choice_named_by(rest, choices)
        if named is None and (verb := _IS.match(rest)):
            named = _choice_named_by(rest[verb.end():], choices)
        if named is not None:
            stated.append(named)  # "Answer: The head librarian", "Answer: A storm"
            continue
        match = _ANSWER_MARKER.match(plain, marker.start())
        if match is None or not _letter_is_intended(match.group("letter"), bool(match.group("open")), match.group("after")):
            continue
        index = _index_of(match.group("letter"), len(choices))
        # The choice text after the letter must agree with it: "Answer: A) the farmer", the
        # farmer being B, names two choices; "Answer: C) the farmer" with two choices, one.
        named = _choice_named_by(_line_rest(plain, match.end("letter")).lstrip(" )].:-–"), choices)
        stated.append(named if index is None else index if named in (None, index) else None)
    if stated:
        return _one_choice(stated)
    # No marker: accept bold letters ("**B**") that agree, or a final line that is only a
    # letter or only a choice's text.
    bold = re.findall(r"\*\*\s*\(?([A-Z])\)?\s*\*\*", text)
    if bold:
        return _one_choice([_index_of(letter, len(choices)) for letter in bold])
    lines = [line for line in plain.splitlines() if line.strip()]
    if lines:
        bare = _BARE_LETTER_LINE.match(lines[-1])
        if bare:
            return _index_of(bare.group(1), len(choices))
        named = _choice_named_by(lines[-1], choices)
        if named is not None:
            return named
    # A reply that quotes exactly one labelled choice ("A) a storm") has chosen it; one that
    # lists several is only restating the options.
    labelled = {match.group(1) for line in lines if (match := _LABELLED_CHOICE_LINE.match(line))}
    if len(labelled) == 1:
        return _index_of(labelled.pop(), len(choices))
    return None


def _index_of(letter: str, n_choices: int) -> int | None:
    index = LETTERS.index(letter.upper())
    return index if index < n_choices else None


# Verdict words, longest first so that "NOT CORRECT" and "INCORRECT" are consumed whole.
_VERDICT_WORD = (
    r"(?P<word>NOT\s+INCORRECT|(?:NOT|ISN'T|ISNT|IS\s+NOT|NEVER)\s+CORRECT|INCORRECT|CORRECT|WRONG)"
)
_VERDICT_MARKER = re.compile(
    r"\bVERDICT\b\s*(?:IS\b)?\s*[:=\-–]?\s*"
    r"(?:(?:THE\s+)?(?:PROPOSED\s+)?(?:ANSWER|RESPONSE|CLAIM)\s+IS\s+)?"
    rf"\b{_VERDICT_WORD}\b",
    re.IGNORECASE,
)
_VERDICT_ANYWHERE = re.compile(rf"\b{_VERDICT_WORD}\b", re.IGNORECASE)


def _verdict_of(word: str) -> bool | None:
    normalised = " ".join(word.upper().split())
    if normalised == "NOT INCORRECT":
        return None  # a double negative is not a verdict anyone should train on
    return normalised == "CORRECT"


def parse_verdict(text: str) -> bool | None:
    """True for CORRECT, False for INCORRECT; None when absent or ambiguous."""
    if not text:
        return None
    plain = _MARKDOWN.sub("", text)
    markers = {_verdict_of(match.group("word")) for match in _VERDICT_MARKER.finditer(plain)}
    if markers:
        # Every stated verdict must agree: "Verdict: CORRECT ... Verdict: INCORRECT" is none.
        return markers.pop() if len(markers) == 1 else None
    # No marker: the verdict words used anywhere must all agree.
    verdicts = {_verdict_of(match.group("word")) for match in _VERDICT_ANYWHERE.finditer(plain)}
    if len(verdicts) == 1:
        return verdicts.pop()
    return None
