"""engine.data: datasets as users have them, beyond one JSON/JSONL file.

The original MinMax project's QA-simple directory (train.json + val.json), QuALITY from the
Hugging Face hub as Parquet files, as a `datasets.save_to_disk` directory and from the local
hub cache, and the detector's one line for files that repackage QuALITY in other shapes.
Every file here is real: Parquet and Arrow written with pyarrow (or the `datasets` package
itself), with the column types the hub copies have (docs/datasets.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data import DataConfig, Dataset, fit_stories, load_dataset, read_dataset
from storage.errors import UserError

OPTIONS = [
    ["the baker", "the farmer", "the miller", "the smith"],
    ["in spring", "in summer", "in autumn", "in winter"],
    ["a fox", "a hare", "a crow", "a wolf"],
    ["red", "green", "blue", "yellow"],
]
GOLD = [3, 1, 4, 2]  # 1-based, as QuALITY's gold_label
BEST_DISTRACTOR = [2, 4, 1, 1]  # 1-based, what most validators picked


def articles() -> list[str]:
    return [f"Article {index}: the story of a village, told at length. " * 5 for index in range(4)]


def tasksource_table() -> pa.Table:
    """tasksource/QuALITY's layout: one row per question, gold_label 1-4, validation votes."""
    vote = pa.struct([("untimed_annotator_id", pa.string()), ("untimed_answer", pa.int64()),
                      ("untimed_best_distractor", pa.int64()), ("untimed_eval1_answerability", pa.int64()),
                      ("untimed_eval2_context", pa.int64())])
    schema = pa.schema([
        ("article_id", pa.int64()), ("set_unique_id", pa.string()), ("title", pa.string()),
        ("article", pa.string()), ("question", pa.string()), ("question_unique_id", pa.string()),
        ("options", pa.list_(pa.string())), ("writer_label", pa.int64()), ("gold_label", pa.int64()),
        ("validation", pa.list_(vote)), ("difficult", pa.int64()),
    ])
    rows = []
    for index in range(4):
        votes = [{"untimed_annotator_id": f"a{n}", "untimed_answer": GOLD[index],
                  "untimed_best_distractor": BEST_DISTRACTOR[index], "untimed_eval1_answerability": 1,
                  "untimed_eval2_context": 1} for n in range(3)]
        votes.append({"untimed_annotator_id": "skip", "untimed_answer": GOLD[index],
                      "untimed_best_distractor": None, "untimed_eval1_answerability": None,
                      "untimed_eval2_context": None})
        rows.append({"article_id": 20000 + index, "set_unique_id": f"2000{index}_ABC", "title": f"T{index}",
                     "article": articles()[index], "question": f"Question {index}?",
                     "question_unique_id": f"2000{index}_ABC_1", "options": OPTIONS[index],
                     "writer_label": GOLD[index], "gold_label": GOLD[index], "validation": votes,
                     "difficult": index % 2})
    return pa.Table.from_pylist(rows, schema=schema)


def emozilla_table(indices: range) -> pa.Table:
    """emozilla/quality's layout: article, question, options, a 0-based answer, hard."""
    schema = pa.schema([("article", pa.string()), ("question", pa.string()),
                        ("options", pa.list_(pa.string())), ("answer", pa.int64()), ("hard", pa.bool_())])
    rows = [{"article": articles()[index], "question": f"Question {index}?", "options": OPTIONS[index],
             "answer": GOLD[index] - 1, "hard": bool(index % 2)} for index in indices]
    return pa.Table.from_pylist(rows, schema=schema)


def gold_texts(dataset: Dataset) -> dict[str, str]:
    """question -> the text of the choice the dataset marks correct."""
    return {state.question: state.choices[state.correct_index] for state in dataset.train + dataset.eval}


def expected_gold(indices: range) -> dict[str, str]:
    return {f"Question {index}?": OPTIONS[index][GOLD[index] - 1] for index in indices}


def one_line_error(config: DataConfig) -> str:
    with pytest.raises(UserError) as error:
        read_dataset(config)
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# The original project's QA-simple directory
# ---------------------------------------------------------------------------------------


def write_qa_simple_layout(root: Path, n_train: int = 5, n_val: int = 3) -> Path:
    data = root / "dataset" / "qa_simple" / "data"
    data.mkdir(parents=True)
    for file, count, tag in (("train.json", n_train, "t"), ("val.json", n_val, "v")):
        rows = [{"paragraph": f"Story {tag}{index}.", "question": f"Who is {tag}{index}?",
                 "answers": [f"{tag}{index}", "nobody"], "correctAnswerId": 0} for index in range(count)]
        (data / file).write_text(json.dumps(rows))
    return data


def test_qa_simple_name_finds_the_original_layout_and_val_is_the_eval_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_qa_simple_layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    dataset = load_dataset(DataConfig(dataset="qa_simple", eval_fraction=0.5))
    assert dataset.name == "qa_simple" and dataset.split_given
    assert [state.question for state in dataset.train] == [f"Who is t{index}?" for index in range(5)]
    assert [state.question for state in dataset.eval] == [f"Who is v{index}?" for index in range(3)]
    assert dataset.train[0].state_id == "qa_simple-train-0000" and dataset.eval[2].state_id == "qa_simple-val-0002"
    # The directory's path reads the same states; max_states caps each side.
    by_path = load_dataset(DataConfig(dataset=str(data)))
    assert by_path.fingerprint == dataset.fingerprint
    capped = load_dataset(DataConfig(dataset=str(data), max_states=2))
    assert (len(capped.train), len(capped.eval)) == (2, 2)


def test_qa_simple_name_without_the_layout_says_what_it_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = one_line_error(DataConfig(dataset="qa_simple"))
    assert "dataset/qa_simple/data/{train,val}.json" in message and str(tmp_path) in message


def test_a_qa_simple_directory_without_val_json_is_refused(tmp_path: Path) -> None:
    data = write_qa_simple_layout(tmp_path)
    (data / "val.json").unlink()
    assert "val.json is missing" in one_line_error(DataConfig(dataset=str(data)))


# ---------------------------------------------------------------------------------------
# QuALITY from the hub: Parquet
# ---------------------------------------------------------------------------------------


def test_a_tasksource_parquet_file_keeps_1_based_gold_ids_and_votes(tmp_path: Path) -> None:
    path = tmp_path / "quality.parquet"
    pq.write_table(tasksource_table(), path)

    four = load_dataset(DataConfig(dataset=str(path), n_choices=4, eval_fraction=0.5))
    assert gold_texts(four) == expected_gold(range(4))
    assert {state.state_id for state in four.train + four.eval} == {f"2000{i}_ABC_1" for i in range(4)}
    assert not four.split_given  # one file: the split is made here, by story

    two = load_dataset(DataConfig(dataset=str(path), n_choices=2))
    assert gold_texts(two) == expected_gold(range(4))
    for state in two.train + two.eval:
        index = int(state.question.split()[1].rstrip("?"))
        assert set(state.choices) == {OPTIONS[index][GOLD[index] - 1], OPTIONS[index][BEST_DISTRACTOR[index] - 1]}


def test_an_emozilla_parquet_directory_reads_0_based_answers_and_keeps_its_split(tmp_path: Path) -> None:
    data = tmp_path / "quality" / "data"
    data.mkdir(parents=True)
    pq.write_table(emozilla_table(range(3)), data / "train-00000-of-00001-0bffe0bf790d89eb.parquet")
    pq.write_table(emozilla_table(range(3, 4)), data / "validation-00000-of-00001-77baeb9538209706.parquet")

    dataset = load_dataset(DataConfig(dataset=str(tmp_path / "quality"), n_choices=4))
    assert dataset.name == "quality" and dataset.split_given
    assert gold_texts(dataset) == expected_gold(range(4))
    assert [state.question for state in dataset.eval] == ["Question 3?"]
    assert dataset.train[0].state_id == "quality-train-00000"


def test_a_bad_gold_label_names_the_file_row_and_column(tmp_path: Path) -> None:
    table = tasksource_table()
    labels = table.column("gold_label").to_pylist()
    labels[2] = 0
    table = table.set_column(table.column_names.index("gold_label"), "gold_label", pa.array(labels, pa.int64()))
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    assert one_line_error(DataConfig(dataset=str(path))) == f"{path}: [2].gold_label: must be 1-4 (got 0)"


# ---------------------------------------------------------------------------------------
# QuALITY from the hub: a datasets.save_to_disk directory
# ---------------------------------------------------------------------------------------


def write_saved_split(directory: Path, table: pa.Table) -> None:
    """One split as save_to_disk lays it out: Arrow stream files, state.json, dataset_info.json."""
    directory.mkdir(parents=True)
    with pa.OSFile(str(directory / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (directory / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "0", "_split": directory.name}))
    (directory / "dataset_info.json").write_text(json.dumps({"features": {}}))


def test_a_saved_dataset_dict_keeps_its_splits(tmp_path: Path) -> None:
    saved = tmp_path / "quality_saved"
    table = tasksource_table()
    write_saved_split(saved / "train", table.slice(0, 3))
    write_saved_split(saved / "validation", table.slice(3, 1))
    (saved / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))

    dataset = load_dataset(DataConfig(dataset=str(saved), n_choices=4))
    assert dataset.split_given and gold_texts(dataset) == expected_gold(range(4))
    assert [state.state_id for state in dataset.eval] == ["20003_ABC_1"]


def test_a_saved_single_dataset_is_split_here(tmp_path: Path) -> None:
    write_saved_split(tmp_path / "one", emozilla_table(range(4)))
    dataset = load_dataset(DataConfig(dataset=str(tmp_path / "one"), n_choices=4))
    assert not dataset.split_given and dataset.train and dataset.eval
    assert gold_texts(dataset) == expected_gold(range(4))


def test_what_the_datasets_package_saves_loads_with_the_right_gold(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    hub = datasets.DatasetDict({
        "train": datasets.Dataset(tasksource_table().slice(0, 2)),
        "validation": datasets.Dataset(tasksource_table().slice(2, 2)),
    })
    hub.save_to_disk(str(tmp_path / "saved"))
    dataset = load_dataset(DataConfig(dataset=str(tmp_path / "saved"), n_choices=4))
    assert dataset.split_given and gold_texts(dataset) == expected_gold(range(4))
    assert [state.question for state in dataset.eval] == ["Question 2?", "Question 3?"]


# ---------------------------------------------------------------------------------------
# QuALITY from the hub: a hub id in the local cache, never downloaded
# ---------------------------------------------------------------------------------------


def test_a_hub_id_reads_the_cached_snapshot_and_a_missing_one_says_hf_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "datasets--tasksource--QuALITY"
    snapshot = repo / "snapshots" / "ab539212403442ce3a64309490e785e043bea6e1"
    (snapshot / "data").mkdir(parents=True)
    pq.write_table(tasksource_table().slice(0, 3), snapshot / "data" / "train-00000-of-00001.parquet")
    pq.write_table(tasksource_table().slice(3, 1), snapshot / "data" / "validation-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.chdir(tmp_path)

    dataset = load_dataset(DataConfig(dataset="tasksource/QuALITY", n_choices=4))
    assert dataset.name == "QuALITY" and dataset.split_given
    assert gold_texts(dataset) == expected_gold(range(4))

    message = one_line_error(DataConfig(dataset="emozilla/quality"))
    assert "hf download emozilla/quality --repo-type dataset" in message and "never downloads" in message


# ---------------------------------------------------------------------------------------
# The detector: repackaged QuALITY is named and refused in one line
# ---------------------------------------------------------------------------------------


def test_a_long_context_benchmark_jsonl_gets_the_detectors_line(tmp_path: Path) -> None:
    path = tmp_path / "quality.jsonl"
    line = {
        "instructions": ["Who baked the bread?\n\n (A) the baker\n (B) the farmer\n (C) the miller\n (D) the smith"],
        "outputs": ["(A) the baker"],
        "input": articles()[0],
        "source": "quality",
        "evaluation": "exam",
    }
    path.write_text(json.dumps(line) + "\n")
    message = one_line_error(DataConfig(dataset=str(path)))
    assert message.startswith(f"{path}:1: this looks like a long-context benchmark's input/instructions/outputs JSONL")
    assert "not supported: use the official QuALITY v1.0.1 JSONL" in message and "tasksource/QuALITY" in message


def test_scrolls_style_parquet_and_unknown_columns_are_named(tmp_path: Path) -> None:
    scrolls = tmp_path / "scrolls.parquet"
    pq.write_table(pa.table({"id": ["q1"], "pid": ["q1_0"], "input": ["Q? (A) a (B) b\n\nArticle"], "output": ["a"]}), scrolls)
    assert "SCROLLS-style input/output" in one_line_error(DataConfig(dataset=str(scrolls)))

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"text": ["t"], "label": [1]}), other)
    assert "not a QuALITY layout this reads (columns: label, text)" in one_line_error(DataConfig(dataset=str(other)))


def test_flat_hub_rows_exported_as_jsonl_load_too(tmp_path: Path) -> None:
    path = tmp_path / "exported.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tasksource_table().to_pylist()))
    dataset = load_dataset(DataConfig(dataset=str(path), n_choices=4))
    assert gold_texts(dataset) == expected_gold(range(4))


def test_an_empty_directory_lists_what_it_looked_for(tmp_path: Path) -> None:
    message = one_line_error(DataConfig(dataset=str(tmp_path)))
    assert "is a directory without a dataset in it" in message and "*.parquet" in message


# ---------------------------------------------------------------------------------------
# Cutting stories after reading: counted once, fingerprinted
# ---------------------------------------------------------------------------------------


def test_fit_stories_counts_distinct_cut_stories_and_refingerprints(tmp_path: Path) -> None:
    path = tmp_path / "quality.parquet"
    pq.write_table(tasksource_table(), path)
    read = read_dataset(DataConfig(dataset=str(path)))
    fitted, n_cut = fit_stories(read, max_tokens=20, tokenizer=None)  # 80 characters
    assert n_cut == 4 and fitted.fingerprint != read.fingerprint
    assert all(len(state.story) <= 80 for state in fitted.train + fitted.eval)
    assert fitted.fingerprint == load_dataset(DataConfig(dataset=str(path), max_story_tokens=20)).fingerprint
    unchanged, none_cut = fit_stories(read, max_tokens=10_000, tokenizer=None)
    assert none_cut == 0 and unchanged.fingerprint == read.fingerprint


def test_shards_of_one_split_number_rows_on_without_clashing_ids(tmp_path: Path) -> None:
    data = tmp_path / "sharded"
    data.mkdir()
    pq.write_table(emozilla_table(range(2)), data / "train-00000-of-00002.parquet")
    pq.write_table(emozilla_table(range(2, 4)), data / "train-00001-of-00002.parquet")
    dataset = load_dataset(DataConfig(dataset=str(data), n_choices=4))
    ids = sorted(state.state_id for state in dataset.train + dataset.eval)
    assert ids == [f"sharded-train-{row:05d}" for row in range(4)]
    assert gold_texts(dataset) == expected_gold(range(4))


def test_quality_release_directory_uses_train_and_dev_preferring_html_stripped(tmp_path: Path) -> None:
    release = tmp_path / "QuALITY.v1.0.1"
    release.mkdir()
    fixture = Path(__file__).parent / "fixtures" / "data" / "quality.jsonl"
    lines = fixture.read_text().splitlines()
    (release / "QuALITY.v1.0.1.htmlstripped.train").write_text("\n".join(lines[:-1]) + "\n")
    (release / "QuALITY.v1.0.1.htmlstripped.dev").write_text(lines[-1] + "\n")
    (release / "QuALITY.v1.0.1.train").write_text("not read: the HTML version\n")
    (release / "QuALITY.v1.0.1.dev").write_text("not read: the HTML version\n")
    (release / "QuALITY.v1.0.1.htmlstripped.test").write_text("not read: no labels\n")
    dataset = load_dataset(DataConfig(dataset=str(release), n_choices=4))
    assert dataset.split_given and dataset.name == "QuALITY.v1.0.1"
    last_article = json.loads(lines[-1])
    assert [state.question for state in dataset.eval] == [q["question"] for q in last_article["questions"]]
    assert len(dataset.train) == sum(len(json.loads(line)["questions"]) for line in lines[:-1])

    (release / "QuALITY.v1.0.1.htmlstripped.dev").unlink()
    (release / "QuALITY.v1.0.1.dev").unlink()
    assert "but not its .dev partner" in one_line_error(DataConfig(dataset=str(release)))
