"""Game states: load a dataset, convert it to the configured number of choices, truncate
stories to a token budget and split it into train and eval, deterministically.

    from engine.data import DataConfig, load_dataset
    dataset = load_dataset(DataConfig(dataset="builtin"))          # the stories shipped here
    dataset = load_dataset(DataConfig(dataset="QuALITY.v1.0.1.htmlstripped.dev",
                                      n_choices=2, max_story_tokens=1024), tokenizer)
    dataset = read_dataset(config)                         # all but the cut: no model needed
    dataset, n_cut = fit_stories(dataset, 1024, tokenizer)  # the cut, once a tokenizer is known

Two file formats are read (GAME.md §1: a state is story, question, choices, correct index):

- QA-simple: a JSON array of {"paragraph", "question", "answers": [a, b], "correctAnswerId": 0|1}.
  The built-in dataset (engine/datasets/stories.json) uses it, so one loader serves both.
- QuALITY v1.0.1: JSONL, one article per line: {"article", "questions": [{"question",
  "options": [4 strings], "gold_label": 1-4, "validation": [{"untimed_best_distractor": 1-4}]}]}.
  With n_choices = 2 a question keeps its gold option and the distractor most validators
  picked as the best one (ties: lowest option number; without votes: the first non-gold
  option), in an order fixed by a hash of the state id and split_seed.

The same two layouts arrive in other containers, read by the same field checks:

- A QA-simple directory with train.json and val.json (the original MinMax project's
  `dataset/qa_simple/data/`; the name `qa_simple` finds it under the current directory).
  val.json is the evaluation split. Likewise QuALITY's release directory (.train, .dev).
- QuALITY from the Hugging Face hub, one question per row with a 1-based gold_label or a
  0-based answer (docs/datasets.md has the column mapping of each copy): a Parquet file
  or a directory of them, a `datasets.save_to_disk` directory (Arrow files, read here with
  pyarrow), or a hub id such as `tasksource/QuALITY` already in the local Hugging Face cache
  (never downloaded). Files named by split (train-*, validation-*) keep the hub's split.

Files that repackage QuALITY in other shapes (a long-context suite's input/instructions/outputs
JSONL, SCROLLS' input/output) are recognised and refused in one line that says what to use.

Without a split of its own, the train/eval split keeps every question on one story on the
same side (see split_states).

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
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from players.config import CONFIG_MODEL
from storage.errors import UserError

if TYPE_CHECKING:  # transformers and pyarrow are heavy; only type checkers need them here
    import pyarrow as pa
    from transformers import PreTrainedTokenizerBase

BUILTIN_DATASET = "builtin"
BUILTIN_PATH = Path(__file__).parent / "datasets" / "stories.json"

# Appended where a story was cut, so neither player mistakes a cut story for a whole one.
TRUNCATION_MARKER = " [...]"
# Without a tokenizer the budget is converted to characters; ~4 characters per token is the
# usual figure for English text under BPE vocabularies.
CHARS_PER_TOKEN = 4

QA_SIMPLE_FIELDS = "paragraph, question, answers, correctAnswerId"

# The original MinMax project's dataset, by name and where that project keeps it.
QA_SIMPLE_NAME = "qa_simple"
QA_SIMPLE_LAYOUT = "dataset/qa_simple/data"

ARROW_SUFFIXES = (".parquet", ".arrow")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Hub split names and the side of the game they feed; "test" files are skipped (no labels).
HUB_SPLIT_SIDES = {"train": "train", "validation": "eval", "dev": "eval", "val": "eval", "test": "test"}


# ---------------------------------------------------------------------------------------
# Config and the values load_dataset returns
# ---------------------------------------------------------------------------------------


class DataConfig(BaseModel):
    """The [data] section of a run config."""

    model_config = CONFIG_MODEL

    dataset: str = Field(
        default=BUILTIN_DATASET,
        min_length=1,
        description="'builtin' (the stories shipped with minmax-engine), 'qa_simple' (the "
        "original MinMax project's dataset/qa_simple/data), a path (a QA-simple .json file or "
        "directory with train.json and val.json, a QuALITY .jsonl, .parquet or "
        "datasets.save_to_disk directory), or a Hugging Face dataset id in the local cache; "
        "relative paths resolve against the current directory.",
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
        f"{TRUNCATION_MARKER.strip()!r}), counted with the policy's tokenizer. Unset: what "
        "the story-reading models' context leaves after prompt and generation (the value "
        "used is recorded in the run's config); whole stories when no model states a context.",
    )
    eval_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Expected share of stories (with all their questions) held out for "
        "evaluation; unused when the dataset has its own split (val.json, a validation split).",
    )
    split_seed: int = Field(
        default=0,
        description="Seeds the train/eval split and the order of converted QuALITY choices.",
    )
    max_states: int | None = Field(
        default=None,
        ge=1,
        description="Keep only the first N states in file order (tiny runs), of each split "
        "when the dataset has its own; None keeps all.",
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
    of every loaded state (after conversion, capping and truncation), in file order; for a
    source with its own split, of {"train": [...], "eval": [...]}. `states` keeps that order
    (so stories can be cut later, once a tokenizer is known); `source` is what was read."""

    name: str
    train: list[State]
    eval: list[State]
    fingerprint: str
    states: tuple[State, ...] = ()
    split_given: bool = False
    source: str = ""


# ---------------------------------------------------------------------------------------
# load_dataset: resolve -> parse -> cap -> truncate -> fingerprint -> split
# ---------------------------------------------------------------------------------------


def load_dataset(config: DataConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Dataset:
    """Load, convert, truncate and split the dataset `config` names."""
    dataset = read_dataset(config)
    if config.max_story_tokens is not None:
        dataset, _cut = fit_stories(dataset, config.max_story_tokens, tokenizer)
    return dataset


def read_dataset(config: DataConfig) -> Dataset:
    """Everything but cutting stories: find, parse, check, cap and split. Needs no model, so
    a play command runs it before loading any (a bad file costs nothing)."""
    source = _read_source(config)
    everything = [state for part in source.parts.values() for state in part]
    if not everything:
        raise UserError(f"{source.shown}: the dataset is empty; add at least one question")
    _reject_duplicate_ids(everything, source.shown)

    cap = config.max_states
    if "all" in source.parts:
        states = source.parts["all"][:cap] if cap is not None else source.parts["all"]
        train, evaluation = split_states(states, config.eval_fraction, config.split_seed)
        return Dataset(source.name, train, evaluation, fingerprint(states), tuple(states),
                       split_given=False, source=source.shown)
    # The source's own split: max_states caps each side, so neither is emptied by the cap.
    train = source.parts["train"][:cap] if cap is not None else source.parts["train"]
    evaluation = source.parts["eval"][:cap] if cap is not None else source.parts["eval"]
    for side, states in (("train", train), ("evaluation", evaluation)):
        if not states:
            raise UserError(f"{source.shown}: the {side} split is empty; add questions to it")
    return Dataset(source.name, train, evaluation, _split_fingerprint(train, evaluation),
                   tuple(train + evaluation), split_given=True, source=source.shown)


def fit_stories(
    dataset: Dataset, max_tokens: int, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[Dataset, int]:
    """Cut every story longer than `max_tokens` (see truncate_by_tokens); returns the new
    dataset and how many distinct stories were cut."""
    cut = _cut_stories(dataset.states, max_tokens, tokenizer, dataset.source or dataset.name)
    if not any(cut[story] != story for story in cut):
        return dataset, 0

    def refit(states: Sequence[State]) -> list[State]:
        return [State(s.state_id, cut[s.story], s.question, s.choices, s.correct_index) for s in states]

    train, evaluation, states = refit(dataset.train), refit(dataset.eval), refit(dataset.states)
    digest = _split_fingerprint(train, evaluation) if dataset.split_given else fingerprint(states)
    n_cut = sum(1 for story, kept in cut.items() if kept != story)
    return Dataset(dataset.name, train, evaluation, digest, tuple(states), dataset.split_given,
                   dataset.source), n_cut


def fingerprint(states: list[State]) -> str:
    """SHA-256 of the states' canonical JSON (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(
        [asdict(state) for state in states],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _split_fingerprint(train: list[State], evaluation: list[State]) -> str:
    canonical = json.dumps(
        {"train": [asdict(state) for state in train], "eval": [asdict(state) for state in evaluation]},
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


@dataclass(frozen=True)
class _Source:
    """What data.dataset names, parsed: states under "all" (to be split here) or under
    "train" and "eval" (the source's own split)."""

    name: str  # the prefix of generated state ids
    shown: str  # how messages name it
    parts: dict[str, list[State]]


def _read_source(config: DataConfig) -> _Source:
    dataset = config.dataset
    if dataset == BUILTIN_DATASET:
        return _file_source(BUILTIN_PATH, str(BUILTIN_PATH), BUILTIN_DATASET, config)
    if dataset == QA_SIMPLE_NAME:
        layout = Path(QA_SIMPLE_LAYOUT)
        if not layout.is_dir():
            raise UserError(
                f"data.dataset = {QA_SIMPLE_NAME!r}: looked for the original MinMax project's "
                f"{QA_SIMPLE_LAYOUT}/{{train,val}}.json under {Path.cwd()} and it is not there; "
                "run from that project's root or give the directory's path"
            )
        return _directory_source(layout, QA_SIMPLE_NAME, config)
    path = Path(dataset).expanduser()  # relative paths resolve against the current directory
    if path.is_dir():
        return _directory_source(path, _directory_name(path), config)
    if path.is_file():
        if path.suffix in ARROW_SUFFIXES:
            return _arrow_files_source([path], dataset, path.stem, config)
        return _file_source(path, dataset, path.stem or path.name, config)
    if _looks_like_a_hub_id(dataset):
        return _hub_cache_source(dataset, config)
    if not path.suffix and len(path.parts) == 1:
        raise UserError(
            f"data.dataset: unknown dataset name {dataset!r}; the built-in one is "
            f"'{BUILTIN_DATASET}', '{QA_SIMPLE_NAME}' finds {QA_SIMPLE_LAYOUT}, anything else "
            "must be a path (QA-simple .json, QuALITY .jsonl or .parquet, a dataset directory) "
            "or a Hugging Face dataset id in the local cache"
        )
    raise UserError(f"{dataset}: file not found; check data.dataset (relative paths "
                    f"resolve against {Path.cwd()})")


def _directory_name(path: Path) -> str:
    # dataset/qa_simple/data and a hub snapshot's data/ are named by the folder above them.
    resolved = path.resolve()
    if resolved.name == "data" and resolved.parent.name:
        return resolved.parent.name
    return resolved.name or "dataset"


def _looks_like_a_hub_id(dataset: str) -> bool:
    """owner/name, neither a file-like name nor under a local folder of that name."""
    owner, _, name = dataset.partition("/")
    return (
        HUB_ID.fullmatch(dataset) is not None
        and Path(name).suffix not in (".json", ".jsonl", *ARROW_SUFFIXES)
        and not Path(owner).exists()
    )


def _file_source(path: Path, shown: str, name: str, config: DataConfig) -> _Source:
    text = _read_text(path, shown)
    file_format = config.format if config.format != "auto" else _detect_format(text, shown)
    if file_format == "qa-simple":
        _require_two_choices(config, shown)
        return _Source(name, shown, {"all": _parse_qa_simple(text, shown, name)})
    states = _parse_quality(text, shown, name, config.n_choices, config.split_seed)
    return _Source(name, shown, {"all": states})


def _require_two_choices(config: DataConfig, shown: str) -> None:
    if config.n_choices != 2:
        raise UserError(
            f"{shown}: QA-simple states have exactly 2 choices; set data.n_choices = 2 "
            "(or use a QuALITY file for 4)"
        )


def _directory_source(path: Path, name: str, config: DataConfig) -> _Source:
    shown = str(path)
    qa_files = [path / "train.json", path / "val.json"]
    if any(file.is_file() for file in qa_files):
        missing = [file.name for file in qa_files if not file.is_file()]
        if missing:
            raise UserError(
                f"{shown}: a QA-simple directory holds train.json and val.json (the evaluation "
                f"split); {missing[0]} is missing"
            )
        if config.format == "quality":
            raise UserError(f"{shown}: holds QA-simple train.json/val.json, not QuALITY; "
                            "remove data.format or set it to 'qa-simple'")
        _require_two_choices(config, shown)
        parts = {}
        for side, file, label in (("train", qa_files[0], "train"), ("eval", qa_files[1], "val")):
            text = _read_text(file, str(file))
            parts[side] = _parse_qa_simple(text, str(file), f"{name}-{label}")
        return _Source(name, shown, parts)
    official = _official_quality_files(path)
    if official is not None:
        if config.format == "qa-simple":
            raise UserError(f"{shown}: holds QuALITY's .train/.dev files, not QA-simple; remove "
                            "data.format or set it to 'quality'")
        parts = {}
        for side, file in zip(("train", "eval"), official):
            text = _read_text(file, str(file))
            parts[side] = _parse_quality(text, str(file), name, config.n_choices, config.split_seed)
        return _Source(name, shown, parts)
    if (path / "dataset_dict.json").is_file():
        return _saved_dataset_dict_source(path, name, config)
    if (path / "state.json").is_file():
        return _arrow_files_source(_saved_dataset_files(path), shown, name, config)
    parquet_files = sorted(file for file in path.rglob("*.parquet") if file.is_file())
    if parquet_files:
        return _arrow_files_source(parquet_files, shown, name, config)
    raise UserError(
        f"{shown}: is a directory without a dataset in it (looked for train.json + val.json, "
        "QuALITY's *.train + *.dev, a datasets.save_to_disk dataset_dict.json or state.json, "
        "and *.parquet files); "
        "set data.dataset to one of those or to a .json/.jsonl file"
    )


def _official_quality_files(path: Path) -> tuple[Path, Path] | None:
    """The train and dev files of QuALITY's own release (QuALITY.v1.0.1.htmlstripped.train,
    .dev) in `path`, the HTML-stripped ones when both kinds are there; None without them."""
    chosen = []
    for suffix in (".train", ".dev"):
        files = sorted(file for file in path.glob(f"*{suffix}") if file.is_file())
        stripped = [file for file in files if "htmlstripped" in file.name]
        files = stripped or files
        if len(files) > 1:
            names = ", ".join(file.name for file in files)
            raise UserError(f"{path}: several QuALITY {suffix} files ({names}); set data.dataset "
                            "to the directory of one release or to one file")
        chosen.extend(files)
    if len(chosen) == 2:
        return chosen[0], chosen[1]
    if chosen:
        raise UserError(f"{path}: holds {chosen[0].name} but not its "
                        f"{'.dev' if chosen[0].suffix == '.train' else '.train'} partner; "
                        "add it or set data.dataset to the one file")
    return None


# ---------------------------------------------------------------------------------------
# QuALITY as the Hugging Face hub has it: Parquet, save_to_disk Arrow, the local hub cache
# ---------------------------------------------------------------------------------------


def _hub_cache_source(repo_id: str, config: DataConfig) -> _Source:
    """A hub dataset already downloaded into the local Hugging Face cache; never fetched."""
    from huggingface_hub.constants import HF_HUB_CACHE  # only when a hub id is asked for

    folder = Path(HF_HUB_CACHE) / ("datasets--" + repo_id.replace("/", "--"))
    snapshots = sorted((folder / "snapshots").glob("*")) if (folder / "snapshots").is_dir() else []
    if not snapshots:
        raise UserError(
            f"data.dataset = {repo_id!r}: no such file or directory, and no Hugging Face dataset "
            f"{repo_id} in the local cache ({folder}); minmax-engine never downloads: run "
            f"`hf download {repo_id} --repo-type dataset` on a machine with network, or give a "
            "local Parquet file or directory"
        )
    main_ref = folder / "refs" / "main"
    revision = main_ref.read_text().strip() if main_ref.is_file() else ""
    snapshot = folder / "snapshots" / revision
    if not revision or not snapshot.is_dir():
        snapshot = max(snapshots, key=lambda path: path.stat().st_mtime)  # no usable main ref: the newest
    source = _directory_source(snapshot, repo_id.rsplit("/", 1)[-1], config)
    return _Source(source.name, f"{repo_id} ({snapshot})", source.parts)


def _saved_dataset_files(directory: Path) -> list[Path]:
    """The Arrow files of one `datasets.save_to_disk` split, in the order state.json lists."""
    state_file = directory / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    files = [directory / name for name in names] or sorted(directory.glob("*.arrow"))
    if not files or not all(file.is_file() for file in files):
        raise UserError(f"{directory}: a datasets.save_to_disk directory without its Arrow files "
                        "(state.json lists none, or they are missing); save the dataset again")
    return files


def _saved_dataset_dict_source(path: Path, name: str, config: DataConfig) -> _Source:
    index = path / "dataset_dict.json"
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        splits = None
    if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
        raise UserError(f"{index}: not a datasets.save_to_disk index (expected "
                        '{"splits": [...]}); save the dataset again')
    files = [file for split in splits for file in _saved_dataset_files(path / split)]
    return _arrow_files_source(files, str(path), name, config)


def _split_of(file: Path) -> str:
    """The split a hub file belongs to: train-00000-of-00001.parquet, quality_validation.parquet,
    validation/data-00000-of-00001.arrow (save_to_disk); "" when the names say none."""
    candidates = [*re.split(r"[-_.]", file.name), file.parent.name]
    for candidate in candidates:
        if candidate.lower() in HUB_SPLIT_SIDES:
            return candidate.lower()
    return ""


def _read_arrow_table(file: Path) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.suffix == ".parquet":
            return pq.read_table(file)
        with pa.memory_map(str(file)) as source:
            try:
                return pa.ipc.open_stream(source).read_all()  # what save_to_disk writes
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise UserError(f"{file}: not a readable {file.suffix.lstrip('.')} file ({first_line}); "
                        "check the download or save it again") from None


def _arrow_files_source(files: list[Path], shown: str, name: str, config: DataConfig) -> _Source:
    if config.format == "qa-simple":
        raise UserError(f"{shown}: is QuALITY from Arrow/Parquet files, not QA-simple; remove "
                        "data.format or set it to 'quality'")
    by_split: dict[str, list[State]] = {}
    rows_before: Counter[str] = Counter()  # a split's shards number their rows on from the last
    for file in files:
        split = _split_of(file)
        if split == "test":
            continue  # QuALITY's test answers are withheld; hub copies leave them out or blank
        table = _read_arrow_table(file)
        label = split or file.stem
        by_split.setdefault(HUB_SPLIT_SIDES.get(split, "all"), []).extend(
            _quality_table_states(table, str(file), f"{name}-{label}", rows_before[label],
                                  config.n_choices, config.split_seed)
        )
        rows_before[label] += table.num_rows
    if by_split.get("train") and by_split.get("eval") and not by_split.get("all"):
        return _Source(name, shown, {"train": by_split["train"], "eval": by_split["eval"]})
    pooled = [state for side in ("train", "eval", "all") for state in by_split.get(side, [])]
    return _Source(name, shown, {"all": pooled})


def _quality_table_states(
    table: pa.Table, shown: str, name: str, first_row: int, n_choices: int, split_seed: int
) -> list[State]:
    columns = set(table.column_names)
    flat = {"article", "question", "options"} <= columns
    nested = {"article", "questions"} <= columns
    if not (flat or nested):
        raise _unknown_layout(columns, shown, "columns")
    states = []
    for index, row in enumerate(table.to_pylist()):
        where = _Where(f"{shown}: [{index}]")
        if flat:
            fallback_id = f"{name}-{first_row + index:05d}"
            states.append(_quality_flat_state(row, where, fallback_id, n_choices, split_seed))
        else:
            states.extend(_quality_article_states(row, where, name, first_row + index + 1, n_choices, split_seed))
    return states


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
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _invalid_json(shown, line_number, error.colno, error) from None
        where = _Where(f"{shown}:{line_number}:")
        if not isinstance(record, dict):
            raise where.error("", f"must be one JSON object per line (an article), "
                                  f"got {_json_type(record)}")
        if "article" not in record and "paragraph" in record:
            # A QA-simple item without the enclosing array reaches here under format=auto.
            raise where.error("", "looks like a QA-simple item, but QA-simple files are one "
                                  "JSON array; wrap the items in [ ] separated by commas")
        if "questions" in record or ("article" in record and "question" not in record):
            states.extend(_quality_article_states(record, where, name, line_number, n_choices, split_seed))
        elif {"article", "question", "options"} <= record.keys():
            # One question per line, as the hub's copies have it (exported to JSONL).
            fallback_id = f"{name}-{line_number}"
            states.append(_quality_flat_state(record, where, fallback_id, n_choices, split_seed))
        else:
            raise _unknown_layout(set(record), f"{shown}:{line_number}", "keys")
    return states


def _quality_article_states(
    article: dict[str, Any], where: _Where, name: str, line_number: int, n_choices: int, split_seed: int
) -> list[State]:
    """The official layout: one article with its list of questions (gold_label 1-4)."""
    story = where.text(article, "article")
    questions = where.value(article, "questions", list, "a list of questions")
    if not questions:
        raise where.error("questions", "is empty; give the article at least one question "
                                       "or remove the line")
    set_id = article.get("set_unique_id") or article.get("article_id")
    states = []
    for question_index, question in enumerate(questions):
        item = where.nested(f"questions[{question_index}]")
        if not isinstance(question, dict):
            raise item.error("", f"must be an object (got {_json_type(question)})")
        state_id = _quality_state_id(question, set_id, name, line_number, question_index)
        options = item.text_list(question, "options", lengths=(4,))
        if question.get("gold_label") is None:
            raise item.error("gold_label", "missing; QuALITY test files carry no labels, "
                                           "use the train or dev file")
        gold = item.integer(question, "gold_label", low=1, high=4) - 1
        prompt = item.text(question, "question")
        states.append(_quality_state(question, state_id, story, prompt, options, gold, item,
                                     n_choices, split_seed))
    return states


def _quality_flat_state(
    row: dict[str, Any], where: _Where, fallback_id: str, n_choices: int, split_seed: int
) -> State:
    """The hub's layout: one question per row with its article. tasksource/QuALITY keeps the
    official 1-based gold_label (and ids, votes); emozilla/quality has a 0-based answer."""
    story = where.text(row, "article")
    prompt = where.text(row, "question")
    options = where.text_list(row, "options", lengths=(4,))
    if row.get("gold_label") is not None:
        gold = where.integer(row, "gold_label", low=1, high=4) - 1
    elif row.get("answer") is not None:
        gold = where.integer(row, "answer", low=0, high=3)
    else:
        raise where.error("gold_label", "missing (and no 0-based answer column); test splits "
                                        "carry no labels, use the train or validation split")
    unique_id = row.get("question_unique_id")
    state_id = unique_id if isinstance(unique_id, str) and unique_id else fallback_id
    return _quality_state(row, state_id, story, prompt, options, gold, where, n_choices, split_seed)


def _quality_state(
    question: dict[str, Any], state_id: str, story: str, prompt: str, options: list[str], gold: int,
    item: _Where, n_choices: int, split_seed: int,
) -> State:
    if n_choices == 4:
        return State(state_id, story, prompt, tuple(options), gold)
    distractor = _best_distractor(question, gold, item)
    gold_first = _unit_hash(split_seed, state_id, "choice-order") < 0.5
    pair = (options[gold], options[distractor])
    return State(state_id, story, prompt, pair if gold_first else pair[::-1], 0 if gold_first else 1)


def _unknown_layout(keys: set[str], location: str, what: str) -> UserError:
    """Name the shape we see, say it is not read, and what to use instead."""
    use = ("use the official QuALITY v1.0.1 JSONL (github.com/nyu-mll/quality) or a hub copy "
           "with one row per question (tasksource/QuALITY, emozilla/quality)")
    if {"input", "instructions", "outputs"} <= keys:
        seen = ("this looks like a long-context benchmark's input/instructions/outputs JSONL "
                "(L-Eval style: questions with their options written into prompt text, plus "
                "questions of the benchmark's own)")
    elif {"input", "output"} <= keys:
        seen = ("this looks like a SCROLLS-style input/output file (question, options and "
                "article joined into one prompt string)")
    elif {"questions", "options", "gold_label"} <= keys:
        seen = ("this looks like a per-document repackaging (parallel lists of questions, "
                "options and gold labels per row)")
    else:
        shown_keys = ", ".join(sorted(keys)[:8]) + (", ..." if len(keys) > 8 else "")
        seen = f"not a QuALITY layout this reads ({what}: {shown_keys})"
    return UserError(f"{location}: {seen}; not supported: {use}")


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
            if vote.get("untimed_best_distractor") is None:
                continue  # a validator who skipped the question casts no vote (Arrow: null)
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


def _cut_stories(
    states: Sequence[State],
    max_tokens: int,
    tokenizer: PreTrainedTokenizerBase | None,
    shown: str,
) -> dict[str, str]:
    """Each distinct story and its cut version. QuALITY repeats one article for each of its
    questions: each story is cut once."""
    cut: dict[str, str] = {}
    for state in states:
        if state.story not in cut:
            if tokenizer is None:
                cut[state.story] = truncate_by_characters(state.story, max_tokens)
            else:
                cut[state.story] = truncate_by_tokens(state.story, max_tokens, tokenizer, shown)
    return cut


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
