"""docs/log-format.md is enough: a run written by RunWriter is read and its hash chain
recomputed with pyarrow, hashlib and the standard library alone, following only that page.

Nothing below imports the project's reader, verifier or segment code; RunWriter and the
synthetic run only produce the log under test.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from storage.events import LambdaUpdated, RoundPlayed, RunFailed, RunFinished, RunStarted
from storage.synthetic import write_synthetic_run
from storage.writer import RunWriter

# --- the page's rules, written out ------------------------------------------------------

SEGMENT_NAME = re.compile(r"^(\d{12})-(\d{12})\.L(\d+)\.arrow$")
ENVELOPE = ("run_id", "seq", "ts", "schema_version", "event_type", "prev_hash", "hash", "payload")
FLOAT_FIELDS = {"LambdaUpdated": {"old", "new", "mean_f", "delta"}, "CheckpointSaved": {"lambda_value"},
                "RunFinished": {"wall_seconds"},
                "MonitorUpdated": {"logprob_mismatch_mean", "logprob_mismatch_max"},
                "PolicyUpdated": {"logprob_mismatch_mean", "logprob_mismatch_max"}}
NON_FINITE = {"NaN", "Infinity", "-Infinity"}


def live_segments(log_dir: Path) -> list[Path]:
    found = sorted(((int(m[1]), int(m[2]), path) for path in log_dir.iterdir() if (m := SEGMENT_NAME.match(path.name))),
                   key=lambda segment: (segment[0], -segment[1]))
    kept: list[tuple[int, int, Path]] = []
    for first, last, path in found:
        if kept and first >= kept[-1][0] and last <= kept[-1][1]:
            continue
        kept.append((first, last, path))
    return [path for _, _, path in kept]


def float_text(value: float) -> str:
    if not math.isfinite(value):
        return "null"
    shortest = repr(value)  # the shortest round-trip digits
    if "e" not in shortest:
        return shortest  # repr is positional for -4 <= e <= 15, as the page asks
    mantissa, exponent_text = shortest.split("e")
    exponent = int(exponent_text)
    if -5 <= exponent <= 15:  # only e = -5 reaches here: 0.0000d...
        sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
        return f"{sign}0.{'0' * (-exponent - 1)}{digits.replace('.', '')}"
    return f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def canonical(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes exactly " \ and U+0000-U+001F
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(canonical(key) + ":" + canonical(item) for key, item in value.items()) + "}"
    raise TypeError(type(value))


def read_log(run_dir: Path) -> pa.Table:
    segments = live_segments(run_dir / "log")
    return pa.concat_tables(pa.ipc.open_file(pa.memory_map(str(path))).read_all() for path in segments)


# The page's "fields added after schema 1": hashed defaults, last field first.
TRAILING_DEFAULTS = {
    "RoundPlayed": [None, None, None, None, "", None],
    "EvaluationCompleted": ["{}", 1, ""],
    "RunStarted": [None, None],
    "RunResumed": [None],
    "MonitorUpdated": [[], None, None],
    "PolicyUpdated": [[], None, None],
}


def without_trailing_defaults(values: list, defaults: list) -> list:
    """The header values without the added fields still at their defaults, from the end."""
    keep = len(values)
    for default in defaults:
        if keep and type(values[keep - 1]) is type(default) and values[keep - 1] == default:
            keep -= 1
        else:
            break
    return values[:keep]


def recompute_hashes(table: pa.Table) -> list[str]:
    """Each row's hash from the stored values, chained on the stored prev_hash."""
    names = table.column_names
    round_columns = names[names.index("payload") + 1:]
    packed = {name for name in round_columns
              if pa.types.is_list(table.schema.field(name).type)
              and table.schema.field(name).type.value_type in (pa.int32(), pa.float64())}
    rows = table.to_pylist()
    hashes = []
    for row in rows:
        tail = b""
        if row["event_type"] == "RoundPlayed":
            values = []
            for name in round_columns:
                value = row[name]
                if name in packed:
                    values.append(None if value is None else len(value))
                    if value is not None:
                        code = "i" if table.schema.field(name).type.value_type == pa.int32() else "d"
                        tail += struct.pack(f"<{len(value)}{code}", *value)
                else:
                    values.append(value)
        else:
            payload = json.loads(row["payload"])
            floats = FLOAT_FIELDS.get(row["event_type"], set())
            values = []
            for key, value in payload.items():
                if isinstance(value, dict):
                    value = canonical(value)
                elif key in floats and value in NON_FINITE:
                    value = None
                values.append(value)
        values = without_trailing_defaults(values, TRAILING_DEFAULTS.get(row["event_type"], ()))
        header = [row["run_id"], row["seq"], row["ts"], row["schema_version"], row["event_type"], values]
        data = row["prev_hash"].encode("ascii") + canonical(header).encode("utf-8") + tail
        hashes.append(hashlib.sha256(data).hexdigest())
    return hashes


def assert_intact(run_dir: Path) -> pa.Table:
    table = read_log(run_dir)
    assert table.column_names[:8] == list(ENVELOPE)
    seqs = table.column("seq").to_pylist()
    assert seqs == list(range(len(seqs)))
    prev = table.column("prev_hash").to_pylist()
    stored = table.column("hash").to_pylist()
    assert prev[0] == "0" * 64 and prev[1:] == stored[:-1]
    assert recompute_hashes(table) == stored
    head = json.loads((run_dir / "log" / "head.json").read_text())
    assert head == {"last_seq": seqs[-1], "last_hash": stored[-1]}
    manifest = json.loads((run_dir / "log" / "run.json").read_text())
    assert manifest["format"] == "minmax-engine-log" and set(table.column("run_id").to_pylist()) == {manifest["run_id"]}
    return table


# --- the runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["minmax", "rlhf"])
def test_a_synthetic_run_verifies_from_the_page_alone(tmp_path: Path, mode: str) -> None:
    # Flushing every event makes enough segments for a merge (an L1 segment) to happen.
    run_dir = write_synthetic_run(tmp_path / mode, n_rounds=96, mode=mode, window_size=8, k=3, seed=5,
                                  text_bytes=300, n_tokens=12, flush_every=1)
    names = [path.name for path in (run_dir / "log").iterdir()]
    assert any(".L1." in name for name in names) and any(".L0." in name for name in names)
    table = assert_intact(run_dir)
    types = set(table.column("event_type").to_pylist())
    assert {"RunStarted", "RoundPlayed", "PolicyUpdated", "RunFinished"} <= types
    assert ("LambdaUpdated" in types) == (mode == "minmax")

    # A segment whose range lies inside a merged one is skipped: here an unreadable file
    # under such a name, as a crash between a merge and its deletions could leave.
    merged = next(path for path in (run_dir / "log").iterdir() if ".L1." in path.name)
    first = int(merged.name[:12])
    (run_dir / "log" / f"{first + 1:012d}-{first + 2:012d}.L0.arrow").write_bytes(b"not arrow")
    assert read_log(run_dir).num_rows == table.num_rows


def round_event(round_id: int, **overrides: Any) -> RoundPlayed:
    fields: dict[str, Any] = dict(
        round_id=round_id, phase="train", window=0, state_id=f"s{round_id}", sample_index=0,
        story="Ünïcödé story with \"quotes\", a back\\slash, a tab\t, a bell \x07, DEL \x7f, U+2028 \u2028 and 😀.",
        question="Who?", choices=["a/b", "c"], correct_index=0,
        policy_prompt="prompt", policy_prompt_ids=[1, 2, 3], policy_output="Answer: A",
        policy_token_ids=[7, 2_000_000_000, 9], policy_logprobs=[-0.5, -1e-7, -123.456], policy_answer=None,
        monitor_prompt=None, monitor_prompt_ids=None, monitor_output=None, monitor_token_ids=None,
        monitor_logprobs=None, monitor_says_correct=None,
        reward_policy=0.00001, reward_monitor=None, p_accept=1e16, judge_accepts=True, truth="unparsed",
        combined_reward=-2.5e-300, fidelity_penalty=None, lambda_value=float("nan"),
        policy_version=0, monitor_version=0, timings={"policy": 0.25, "odd": float("inf"), "tiny": 3e-5},
    )
    fields.update(overrides)
    return RoundPlayed(**fields)


def test_edge_values_hash_as_the_page_says(tmp_path: Path) -> None:
    run_dir = tmp_path / "edges"
    writer = RunWriter.create(run_dir, "edges-run")
    writer.append(RunStarted(mode="rlhf", config={"lr": 1e-05, "nested": {"b": [1.0, 2], "a": "ü"}, "big": 1e22},
                             seeds={"seed": 1}, package_versions={"python": "3.11"}, data_fingerprint="f" * 64,
                             dataset_name="edges", n_train_states=1, n_eval_states=0))
    writer.append(round_event(0))
    writer.flush()
    writer.append(round_event(1, monitor_prompt="m", monitor_prompt_ids=[], monitor_output="Verdict: CORRECT",
                              monitor_token_ids=[5], monitor_logprobs=[-0.0], monitor_says_correct=True,
                              reward_monitor=123456.789, fidelity_penalty=1000000000000000.0))
    writer.append(LambdaUpdated(old=float("nan"), new=float("inf"), mean_f=0.00001, delta=-0.2,
                                monitor_version=1, applied=False))
    writer.append(RunFailed(error_type="ValueError", message="NaN"))  # a string field, not a float
    writer.append(RunFinished(rounds=2, policy_updates=0, monitor_updates=0, wall_seconds=1e-7))
    writer.close()

    table = assert_intact(run_dir)
    rounds = table.filter(pc.equal(table.column("event_type"), "RoundPlayed")).to_pylist()
    assert rounds[0]["policy_token_ids"] == [7, 2_000_000_000, 9] and rounds[0]["monitor_token_ids"] is None
    assert rounds[1]["monitor_prompt_ids"] == [] and json.loads(rounds[0]["timings"])["odd"] == "Infinity"


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 0.1, 1e-5, 3.5e-5, 1e-4, 1e-6, 1e15, 1e16, 1.2345678901234568e16,
                                   5e-324, 1.5e300, -2.5e-300, 123456.789, 2.0**53])
def test_the_float_rule_matches_what_the_writer_stores(tmp_path: Path, value: float) -> None:
    run_dir = tmp_path / "floats"
    writer = RunWriter.create(run_dir, "floats")
    writer.append(RunFinished(rounds=0, policy_updates=0, monitor_updates=0, wall_seconds=value))
    writer.close()
    payload = read_log(run_dir).column("payload")[0].as_py()
    assert f'"wall_seconds":{float_text(value)}' in payload
    assert_intact(run_dir)
    shutil.rmtree(run_dir)


def test_the_pages_reading_example_runs_and_polars_reads_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    run_dir = write_synthetic_run(tmp_path / "runs" / "r1", n_rounds=32, window_size=8, k=2, text_bytes=200,
                                  n_tokens=8, flush_every=8)
    page = (Path(__file__).resolve().parent.parent / "docs" / "log-format.md").read_text()
    example = re.search(r"```python\n(.*?)```", page, re.DOTALL)
    assert example is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(example.group(1).replace("runs/<run_id>/log", "runs/r1/log"), namespace)  # noqa: S102 - our own page
    assert namespace["table"].num_rows == read_log(run_dir).num_rows
    assert namespace["rounds"].num_rows == read_log(run_dir).column("event_type").to_pylist().count("RoundPlayed") >= 32
    assert namespace["lambdas"] and {"old", "new", "mean_f"} <= set(namespace["lambdas"][0])
    frame = pl.concat([pl.read_ipc(path) for path in namespace["live_segments"](run_dir / "log")])
    assert frame["seq"].to_list() == list(range(namespace["table"].num_rows))
