"""Game states: load a dataset, convert it to the configured number of choices, truncate
stories to a token budget and split it into train and eval, deterministically.

    from engine.data import DataConfig, load_dataset
    dataset = load_dataset(DataConfig(dataset="builtin"))          # the stories shipped here
    dataset = load_dataset(DataConfig(dataset="QuALITY.v1.0.1.htmlstripped.dev",
                                      n_choices=2, max_story_tokens=1024), tokenizer)

Two file formats are read (GAME.md §1: a state is story, question, choices, correct index):

- QA-simple: a JSON array of {"paragraph", "question", "answers": [a, b], "correctAnswerId": 0|1}.
  The built-in dataset (engine/datasets/stories.json) uses it, so one loader serves both.
- QuALITY v1.0.1: JSONL, one article per line: {"article", "questions": [{"question",
  "options": [4 strings], "gold_label": 1-4, "validation": [{"untimed_best_distractor": 1-4}]}]}.
  With n_choices = 2 a question keeps its gold option and the distractor most validators
  picked as the best one (ties: lowest option number; without votes: the first non-gold
  option), in an order fixed by a hash of the state id and split_seed.

The train/eval split keeps every question on one story on the same side (see split_states).

Every step is a pure function of the file and the config, so two processes (or a resumed
run) see the same states, and `Dataset.fingerprint` lets RunStarted pin exactly which.
A file the user can fix fails with one UserError line naming file, line or index, and field.

Why one file over 500 lines: reading, choice conversion, truncation, the split and the
fingerprint are one pipeline of pure functions whose output the fingerprint pins; a change
to any step changes what every run of that dataset plays, so they are reviewed together.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from players.config import CONFIG_MODEL
from storage.errors import UserError

if TYPE_CHECKING:  # transformers is heavy; only type checkers need it here
    from transformers import PreTrainedTokenizerBase

BUILTIN_DATASET = "builtin"
BUILTIN_PATH = Path(__file__).parent / "datasets" / "stories.json"

# Appended where a story was cut, so neither player mistakes a cut story for a whole one.
TRUNCATION_MARKER = " [...]"
# Without a tokenizer the budget is converted to characters; ~4 characters per token is the
# usual figure for English text under BPE vocabularies.
CHARS_PER_TOKEN = 4

QA_SIMPLE_FIELDS = "paragraph, question, answers, correctAnswerId"


# ---------------------------------------------------------------------------------------
# Config and the values load_dataset returns
# ---------------------------------------------------------------------------------------


class DataConfig(BaseModel):
    """The [data] section of a run config."""

    model_config = CONFIG_MODEL

    dataset: str = Field(
        default=BUILTIN_DATASET,
        min_length=1,
        description="'builtin' (the stories shipped with minmax-engine) or a path to a "
        "QA-simple .json or QuALITY .jsonl file; relative paths resolve against the "
        "current directory.",
    )
    format: Literal["auto", "qa-simple", "quality"] = Field(
        default="auto",
        description="File format; 'auto' looks at the file's first character "
        "('[' = QA-simple JSON array, '{' = QuALITY JSONL).",
    )
    n_choices: Literal[2, 4] = Field(
        default=2,
        description="Choices per state. QuALITY's 4 options become gold + the most-chosen "
        "distractor when 2; QA-simple has exactly 2.",
    )
    max_story_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Cut longer stories to this many tokens (start kept, cut marked with "
        f"{TRUNCATION_MARKER.strip()!r}); counted with the tokenizer given to load_dataset, "
        f"else as {CHARS_PER_TOKEN} characters per token. None keeps whole stories.",
    )
    eval_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Expected share of stories (with all their questions) held out for evaluation.",
    )
    split_seed: int = Field(
        default=0,
        description="Seeds the train/eval split and the order of converted QuALITY choices.",
    )
    max_states: int | None = Field(
        default=None,
        ge=1,
        description="Keep only the first N states in file order (tiny runs); None keeps all.",
    )


@dataclass(frozen=True)
class State:
    """One game state (GAME.md §1). `choices` is a tuple so that a State is truly immutable."""

    state_id: str
    story: str
    question: str
    choices: tuple[str, ...]
    correct_index: int

    def __post_init__(self) -> None:
        # Callers may pass a list; store a tuple so equality, hashing and freezing hold.
        object.__setattr__(self, "choices", tuple(self.choices))
        if not 0 <= self.correct_index < len(self.choices):
            raise ValueError(
                f"State {self.state_id}: correct_index {self.correct_index} is outside "
                f"0..{len(self.choices) - 1}"
            )


@dataclass(frozen=True)
class Dataset:
    """States split into train and eval. `fingerprint` is the SHA-256 of the canonical JSON
    of every loaded state (after conversion, capping and truncation), in file order."""

    name: str
    train: list[State]
    eval: list[State]
    fingerprint: str


# ---------------------------------------------------------------------------------------
# load_dataset: resolve -> parse -> cap -> truncate -> fingerprint -> split
# ---------------------------------------------------------------------------------------


def load_dataset(config: DataConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Dataset:
    """Load, convert, truncate and split the dataset `config` names."""
    path, name = _resolve_dataset(config.dataset)
    shown = config.dataset if config.dataset != BUILTIN_DATASET else str(BUILTIN_PATH)
    text = _read_text(path, shown)
    file_format = config.format if config.format != "auto" else _detect_format(text, shown)

    if file_format == "qa-simple":
        if config.n_choices != 2:
            raise UserError(
                f"{shown}: QA-simple states have exactly 2 choices; set data.n_choices = 2 "
                "(or use a QuALITY file for 4)"
            )
        states = _parse_qa_simple(text, shown, name)
    else:
        states = _parse_quality(text, shown, name, config.n_choices, config.split_seed)

    if not states:
        raise UserError(f"{shown}: the dataset is empty; add at least one question")
    _reject_duplicate_ids(states, shown)

    if config.max_states is not None:
        states = states[: config.max_states]
    if config.max_story_tokens is not None:
        states = _truncate_stories(states, config.max_story_tokens, tokenizer, shown)

    train, evaluation = split_states(states, config.eval_fraction, config.split_seed)
    return Dataset(name=name, train=train, eval=evaluation, fingerprint=fingerprint(states))


def fingerprint(states: list[State]) -> str:
    """SHA-256 of the states' canonical JSON (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(
        [asdict(state) for state in states],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def split_states(
    states: list[State], eval_fraction: float, split_seed: int
) -> tuple[list[State], list[State]]:
    """Assign each story to eval when the hash of (split_seed, its key) falls below
    eval_fraction, and its states with it: QuALITY asks several questions about one article,
    and a story seen in training would make evaluating on it a test of memory. A story with
    one state is keyed by that state's id, one shared by several by its text, so a state's
    side depends on itself (and its story) only: adding or removing unrelated states never
    moves it. With two or more stories neither side is left empty: the story whose hash is
    closest to the threshold crosses over (only ever needed for tiny sets). A dataset of one
    story told several times is split by state id instead, as nothing else can fill both."""
    sharing = Counter(state.story for state in states)
    by_story = len(sharing) >= 2

    def key(state: State) -> str:
        if by_story and sharing[state.story] > 1:
            return "story:" + hashlib.sha256(state.story.encode("utf-8")).hexdigest()
        return state.state_id

    keys = [key(state) for state in states]
    scores = {k: _unit_hash(split_seed, k, "split") for k in keys}
    eval_keys = {k for k, score in scores.items() if score < eval_fraction}
    if len(scores) >= 2:
        if not eval_keys:
            eval_keys.add(min(scores, key=scores.__getitem__))
        elif len(eval_keys) == len(scores):
            eval_keys.discard(max(scores, key=scores.__getitem__))
    train = [state for state, k in zip(states, keys) if k not in eval_keys]
    evaluation = [state for state, k in zip(states, keys) if k in eval_keys]
    return train, evaluation


def _unit_hash(seed: int, key: str, purpose: str) -> float:
    """A number in [0, 1) fixed by (seed, key, purpose); independent of Python's
    per-process hash randomisation."""
    digest = hashlib.sha256(f"{seed}\x00{purpose}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---------------------------------------------------------------------------------------
# Finding and reading the file
# ---------------------------------------------------------------------------------------


def _resolve_dataset(dataset: str) -> tuple[Path, str]:
    """Map data.dataset to a file and a dataset name (the prefix of generated state ids)."""
    if dataset == BUILTIN_DATASET:
        return BUILTIN_PATH, BUILTIN_DATASET
    path = Path(dataset).expanduser()  # relative paths resolve against the current directory
    if path.is_dir():
        raise UserError(
            f"{dataset}: is a directory; set data.dataset to a .json or .jsonl file in it"
        )
    if not path.exists():
        looks_like_a_name = not path.suffix and len(path.parts) == 1
        if looks_like_a_name:
            raise UserError(
                f"data.dataset: unknown dataset name {dataset!r}; the built-in one is "
                f"'{BUILTIN_DATASET}', anything else must be a path to a QA-simple .json "
                "or QuALITY .jsonl file"
            )
        raise UserError(f"{dataset}: file not found; check data.dataset (relative paths "
                        f"resolve against {Path.cwd()})")
    return path, path.stem or path.name


def _read_text(path: Path, shown: str) -> str:
    try:
        # utf-8-sig drops the byte-order mark some editors add, which json would reject.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{shown}: not UTF-8 text (byte {error.start}); save the file as UTF-8"
        ) from None
    except OSError as error:
        raise UserError(f"{shown}: cannot read the file ({error.strerror})") from None


def _detect_format(text: str, shown: str) -> Literal["qa-simple", "quality"]:
    # QuALITY's own files have no extension (".train", ".dev"), so the content decides.
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{shown}: the file is empty; add questions or pick another dataset")
    if stripped[0] == "[":
        return "qa-simple"
    if stripped[0] == "{":
        return "quality"
    raise UserError(
        f"{shown}: cannot tell the format (expected a JSON array for QA-simple or one JSON "
        "object per line for QuALITY); fix the file or set data.format"
    )


def _invalid_json(shown: str, line: int, column: int, error: json.JSONDecodeError) -> UserError:
    return UserError(f"{shown}:{line}:{column}: invalid JSON ({error.msg}); fix the syntax there")


# ---------------------------------------------------------------------------------------
# QA-simple
# ---------------------------------------------------------------------------------------


def _parse_qa_simple(text: str, shown: str, name: str) -> list[State]:
    if not text.strip():
        raise UserError(f"{shown}: the file is empty; add questions or pick another dataset")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid_json(shown, error.lineno, error.colno, error) from None
    if not isinstance(rows, list):
        raise UserError(
            f"{shown}: a QA-simple file is a JSON array of objects with {QA_SIMPLE_FIELDS} "
            f"(got a JSON {_json_type(rows)}); wrap the items in [ ]"
        )
    states = []
    for index, row in enumerate(rows):
        where = _Where(f"{shown}: [{index}]")
        if not isinstance(row, dict):
            raise where.error("", f"must be an object with {QA_SIMPLE_FIELDS} "
                                  f"(got {_json_type(row)})")
        states.append(
            State(
                state_id=f"{name}-{index:04d}",
                story=where.text(row, "paragraph"),
                question=where.text(row, "question"),
                choices=tuple(where.text_list(row, "answers", lengths=(2,))),
                correct_index=where.integer(row, "correctAnswerId", low=0, high=1),
            )
        )
    return states


# ---------------------------------------------------------------------------------------
# QuALITY
# ---------------------------------------------------------------------------------------


def _parse_quality(
    text: str, shown: str, name: str, n_choices: int, split_seed: int
) -> list[State]:
    states = []
    # split("\n"), not splitlines(): the latter also breaks at U+2028, U+0085 and other
    # separators that may sit unescaped inside a JSON string of an article.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, hand edits) carry no article
        try:
            article = json.loads(line)
        except json.JSONDecodeError as error:
            raise _invalid_json(shown, line_number, error.colno, error) from None
        where = _Where(f"{shown}:{line_number}:")
        if not isinstance(article, dict):
            raise where.error("", f"must be one JSON object per line (an article), "
                                  f"got {_json_type(article)}")
        if "article" not in article and "paragraph" in article:
            # A QA-simple item without the enclosing array reaches here under format=auto.
            raise where.error("", "looks like a QA-simple item, but QA-simple files are one "
                                  "JSON array; wrap the items in [ ] separated by commas")
        story = where.text(article, "article")
        questions = where.value(article, "questions", list, "a list of questions")
        if not questions:
            raise where.error("questions", "is empty; give the article at least one question "
                                           "or remove the line")
        set_id = article.get("set_unique_id") or article.get("article_id")
        for question_index, question in enumerate(questions):
            item = where.nested(f"questions[{question_index}]")
            if not isinstance(question, dict):
                raise item.error("", f"must be an object (got {_json_type(question)})")
            state_id = _quality_state_id(question, set_id, name, line_number, question_index)
            options = item.text_list(question, "options", lengths=(4,))
            if "gold_label" not in question:
                raise item.error("gold_label", "missing; QuALITY test files carry no labels, "
                                               "use the train or dev file")
            gold = item.integer(question, "gold_label", low=1, high=4) - 1
            prompt = item.text(question, "question")
            if n_choices == 4:
                states.append(State(state_id, story, prompt, tuple(options), gold))
                continue
            distractor = _best_distractor(question, gold, item)
            gold_first = _unit_hash(split_seed, state_id, "choice-order") < 0.5
            pair = (options[gold], options[distractor])
            states.append(
                State(state_id, story, prompt, pair if gold_first else pair[::-1],
                      0 if gold_first else 1)
            )
    return states


def _quality_state_id(
    question: dict[str, Any], set_id: object, name: str, line_number: int, question_index: int
) -> str:
    # QuALITY's own ids survive reordering and re-exports; the fallbacks keep ids stable as
    # long as the article and its questions stay where they are.
    unique_id = question.get("question_unique_id")
    if isinstance(unique_id, str) and unique_id:
        return unique_id
    if isinstance(set_id, str) and set_id:
        return f"{set_id}_{question_index + 1}"
    return f"{name}-{line_number}-{question_index + 1}"


def _best_distractor(question: dict[str, Any], gold: int, item: _Where) -> int:
    """0-based index of the distractor validators most often called the best one.

    Votes for the gold option are ignored (a distractor must be wrong). Ties go to the lowest
    option number. Without validation votes (files stripped of `validation`) the first
    non-gold option is used, which is a deterministic but uninformed choice."""
    validation = question.get("validation")
    votes: Counter[int] = Counter()
    if validation is not None:
        if not isinstance(validation, list):
            raise item.error("validation", f"must be a list (got {_json_type(validation)})")
        for vote_index, vote in enumerate(validation):
            voter = item.nested(f"validation[{vote_index}]")
            if not isinstance(vote, dict):
                raise voter.error("", f"must be an object (got {_json_type(vote)})")
            if "untimed_best_distractor" not in vote:
                continue  # a validator who skipped the question casts no vote
            choice = voter.integer(vote, "untimed_best_distractor", low=1, high=4) - 1
            if choice != gold:
                votes[choice] += 1
    if votes:
        return min(votes, key=lambda option: (-votes[option], option))
    return next(option for option in range(4) if option != gold)


# ---------------------------------------------------------------------------------------
# Field checks that produce one-line messages naming file, line/index and field
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """A location in a data file ("data/x.jsonl:17:" or "data/x.json: [3]") plus a JSON path
    prefix, so every error names exactly the field that is wrong."""

    location: str
    path: str = ""

    def nested(self, path: str) -> _Where:
        return _Where(self.location, f"{self.path}.{path}" if self.path else path)

    def error(self, field: str, problem: str) -> UserError:
        if self.path and field:
            full = f"{self.path}.{field}"
        else:
            full = self.path or field
        # "file: [3]" reads better as "file: [3].field"; "file:17:" as "file:17: field".
        if self.location.endswith("]"):
            where = f"{self.location}.{full}" if full else self.location
        else:
            where = f"{self.location} {full}" if full else self.location.rstrip(":")
        return UserError(f"{where}: {problem}")

    def value(self, row: dict[str, Any], field: str, kind: type, described: str) -> Any:
        if field not in row:
            raise self.error(field, f"missing; add it as {described}")
        value = row[field]
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            raise self.error(field, f"must be {described} (got {_show(value)})")
        return value

    def text(self, row: dict[str, Any], field: str) -> str:
        value = self.value(row, field, str, "a non-empty string")
        if not value.strip():
            raise self.error(field, "is empty; give it text")
        return value

    def text_list(self, row: dict[str, Any], field: str, lengths: tuple[int, ...]) -> list[str]:
        count = " or ".join(str(length) for length in lengths)
        described = f"a list of {count} non-empty strings"
        values = self.value(row, field, list, described)
        if len(values) not in lengths:
            raise self.error(field, f"must be {described} (got {len(values)} items)")
        for position, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"{field}[{position}]",
                                 f"must be a non-empty string (got {_show(value)})")
        return values

    def integer(self, row: dict[str, Any], field: str, low: int, high: int) -> int:
        allowed = f"{low} or {high}" if high == low + 1 else f"{low}-{high}"
        value = self.value(row, field, int, f"an integer {allowed}")
        if not low <= value <= high:
            raise self.error(field, f"must be {allowed} (got {value})")
        return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A short one-line rendering of a bad value for an error message."""
    rendered = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    rendered = rendered.replace("\n", " ")
    if len(rendered) > 40:
        rendered = rendered[:37] + "..."
    return f"{_json_type(value)} {rendered}"


def _reject_duplicate_ids(states: list[State], shown: str) -> None:
    seen: set[str] = set()
    for state in states:
        if state.state_id in seen:
            raise UserError(
                f"{shown}: question id {state.state_id!r} appears twice; ids must be unique "
                "(remove the duplicate question)"
            )
        seen.add(state.state_id)


# ---------------------------------------------------------------------------------------
# Story truncation
# ---------------------------------------------------------------------------------------


def _truncate_stories(
    states: list[State],
    max_tokens: int,
    tokenizer: PreTrainedTokenizerBase | None,
    shown: str,
) -> list[State]:
    # QuALITY repeats one article for each of its questions: cut each story once.
    cut: dict[str, str] = {}
    truncated = []
    for state in states:
        if state.story not in cut:
            if tokenizer is None:
                cut[state.story] = truncate_by_characters(state.story, max_tokens)
            else:
                cut[state.story] = truncate_by_tokens(state.story, max_tokens, tokenizer, shown)
        truncated.append(
            State(state.state_id, cut[state.story], state.question, state.choices,
                  state.correct_index)
        )
    return truncated


def truncate_by_tokens(
    story: str, max_tokens: int, tokenizer: PreTrainedTokenizerBase, shown: str = "data"
) -> str:
    """Keep the start of `story` so that it plus the marker is at most `max_tokens` tokens."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    encoded = tokenizer(story, add_special_tokens=False)
    ids = encoded["input_ids"]
    if len(ids) <= max_tokens:
        return story
    keep = max_tokens - count(TRUNCATION_MARKER)
    if keep < 1:
        raise UserError(
            f"data.max_story_tokens = {max_tokens} leaves no room for any story text after "
            f"the cut marker; raise it (stories in {shown} are longer)"
        )
    offsets = _token_end_offsets(story, tokenizer)
    # Re-tokenising the cut text can merge differently at the seam; step back until the
    # budget holds exactly, which usually takes zero or one step.
    while keep >= 1:
        kept = story[: offsets[keep - 1]] if offsets else tokenizer.decode(ids[:keep])
        candidate = kept.rstrip() + TRUNCATION_MARKER
        if count(candidate) <= max_tokens:
            return candidate
        keep -= 1
    return TRUNCATION_MARKER.lstrip()


def _token_end_offsets(story: str, tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """Character end offset of each token when the tokenizer reports offsets (fast
    tokenizers), so the kept text is the original text rather than a re-decoded one."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    encoded = tokenizer(story, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _start, end in encoded["offset_mapping"]]


def truncate_by_characters(story: str, max_tokens: int) -> str:
    """The no-tokenizer fallback: a budget of CHARS_PER_TOKEN characters per token, cut at
    the last whitespace before the limit when one is near, marker included."""
    limit = max_tokens * CHARS_PER_TOKEN
    if len(story) <= limit:
        return story
    room = limit - len(TRUNCATION_MARKER)
    if room < 1:
        raise UserError(
            f"data.max_story_tokens = {max_tokens} leaves no room for any story text after "
            "the cut marker; raise it"
        )
    kept = story[:room]
    last_space = kept.rfind(" ")
    if last_space >= room * 0.8:  # avoid cutting a word in half when it costs little text
        kept = kept[:last_space]
    return kept.rstrip() + TRUNCATION_MARKER
