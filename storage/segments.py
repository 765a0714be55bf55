"""The on-disk shape of a run's log: segment files, their Arrow schema, canonical bytes.

Layout of `runs/<run_id>/log/`:

    run.json                              manifest: run id, schema version (written once)
    writer.lock                           flock'ed by the one writer; holds its pid
    head.json                             last flushed seq and hash (truncation check)
    000000000000-000000000063.L0.arrow    a segment: events seq 0..63, written by one flush
    000000000064-000000004159.L1.arrow    a merged segment: the level-0 segments it replaced
    .tmp-*.arrow                          a segment being written (ignored by readers)

Why immutable Arrow IPC segments rather than a DuckDB database file: a DuckDB file that the
writer holds open blocks every other process, and readers (SQL, TUI, a learner process)
must work while the game is being played. A segment is written under a temporary name,
fsynced, atomically renamed and the directory fsynced, so a reader either sees a whole
segment or none of it, and a kill -9 loses at most the unflushed buffer. Arrow IPC rather
than Parquet because writing it is a memory copy (append throughput) and reading it is a
memory map (a window of 64 rounds is a zero-copy slice of the one batch that holds it);
DuckDB scans the memory-mapped segments as one zero-copy Arrow table, touching only the
columns a query uses (a pyarrow dataset over the same files measured 5-20x slower for the
metrics query).

Every segment has the same wide schema: the envelope columns, one typed column per
RoundPlayed field (lists as Arrow lists, token ids int32, log-probs float64 so they
round-trip bit for bit, free-form dicts as JSON text), and `payload`, the JSON text of any
other event (those are rare: a few per window). Segment names carry the seq range, so a
window read opens only the segments it needs. A compacted segment covers the ranges of the
segments it replaced; until those are deleted a reader ignores any segment whose range lies
inside another's.

Canonical bytes (what each event's hash covers), in this order:
    prev_hash (64 hex chars, ASCII)
    JSON array [run_id, seq, ts, schema_version, event_type, [field values in declared order]]
        where a dict field is its stored JSON text and a packed numeric list (token ids,
        log-probs) is its length, or null when the list is None
    the packed lists' raw little-endian bytes (int32 ids, float64 log-probs), in field order
Verify recomputes these from the stored columns, so any edit to a stored value shows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import os
import re
import struct
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa

from storage.errors import UserError
from storage.events import EVENT_TYPES, SCHEMA_VERSION, TRAILING_DEFAULTS, Event, Recorded, RoundPlayed

LOG_DIR_NAME = "log"
MANIFEST_NAME = "run.json"
HEAD_NAME = "head.json"
LOCK_NAME = "writer.lock"
TEMP_PREFIX = ".tmp-"
GENESIS_HASH = "0" * 64
LOG_FORMAT = "minmax-engine-log"
BATCH_SEQS_KEY = b"batch_first_seqs"

_SEGMENT_NAME = re.compile(r"^(\d{12})-(\d{12})\.L(\d+)\.arrow$")


# ---------------------------------------------------------------------------------------
# Field kinds, derived once from the event dataclasses
# ---------------------------------------------------------------------------------------

FieldKind = Literal["plain", "dict", "packed_int", "packed_float", "str_list"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    arrow_type: pa.DataType
    holds_floats: bool  # float, float | None or dict[str, float]: restore NaN/inf on read


def _strip_optional(hint: Any) -> Any:
    """X | None -> X; also list[int] | NDArray -> list[int] (an array is stored as the list)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None) and typing.get_origin(a) is not np.ndarray]
        if len(args) == 1:
            return args[0]
    return hint


def _field_specs(cls: type[Event], packed: bool) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint = _strip_optional(hints[f.name])
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is dict:
            spec = FieldSpec(f.name, "dict", pa.string(), args[1] is float)
        elif origin is list and args[0] is int and packed:
            spec = FieldSpec(f.name, "packed_int", pa.list_(pa.int32()), False)
        elif origin is list and args[0] is float and packed:
            spec = FieldSpec(f.name, "packed_float", pa.list_(pa.float64()), False)
        elif origin is list and args[0] is str:
            spec = FieldSpec(f.name, "str_list", pa.list_(pa.string()), False)
        elif origin is list:
            spec = FieldSpec(f.name, "plain", pa.list_(pa.int64()), False)
        elif hint is bool:
            spec = FieldSpec(f.name, "plain", pa.bool_(), False)
        elif hint is int:
            spec = FieldSpec(f.name, "plain", pa.int64(), False)
        elif hint is float:
            spec = FieldSpec(f.name, "plain", pa.float64(), True)
        elif hint is str or origin is Literal:
            spec = FieldSpec(f.name, "plain", pa.string(), False)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no storage rule for {hint!r}")
        specs.append(spec)
    return tuple(specs)


# RoundPlayed is stored in typed columns (packed numeric lists); every other event as JSON.
FIELD_SPECS: dict[str, tuple[FieldSpec, ...]] = {
    name: _field_specs(cls, packed=cls is RoundPlayed) for name, cls in EVENT_TYPES.items()
}
ROUND_SPECS = FIELD_SPECS[RoundPlayed.event_type]

ENVELOPE_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("ts", pa.string(), nullable=False),
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("prev_hash", pa.string(), nullable=False),
    pa.field("hash", pa.string(), nullable=False),
    pa.field("payload", pa.string()),  # JSON of a non-RoundPlayed event; NULL for rounds
]
SEGMENT_SCHEMA = pa.schema(ENVELOPE_FIELDS + [pa.field(s.name, s.arrow_type) for s in ROUND_SPECS])
ROUND_COLUMNS = [s.name for s in ROUND_SPECS]

# ---------------------------------------------------------------------------------------
# JSON that keeps NaN and infinities (JSON has no literal for them)
# ---------------------------------------------------------------------------------------

_NONFINITE_TO_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_ready(value: Any) -> Any:
    """Non-finite floats become the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _restore_float(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE_TO_TEXT:
        return _NONFINITE_TO_TEXT[value]
    if isinstance(value, dict):
        return {k: _restore_float(v) for k, v in value.items()}
    return value


def dumps_json(value: Any) -> str:
    text = orjson.dumps(value)
    # orjson writes NaN and infinities as null; only then is the slower walk needed.
    if b"null" in text:
        text = orjson.dumps(_json_ready(value))
    return text.decode()


# ---------------------------------------------------------------------------------------
# Canonical bytes and the hash chain
# ---------------------------------------------------------------------------------------


@dataclass
class EncodedEvent:
    """An event reduced to what is stored and hashed (built once, at append)."""

    event_type: str
    header_values: list[Any]  # declared-order values as hashed (dict -> JSON text, packed -> len)
    dict_texts: dict[str, str]
    packed: dict[str, bytes | None]  # raw little-endian int32 / float64 values
    payload_json: str | None  # non-RoundPlayed events only


@dataclass(frozen=True)
class _TypeLayout:
    """Per event type: field names in order and the positions that need encoding."""

    names: tuple[str, ...]
    dict_positions: tuple[int, ...]
    packed_positions: tuple[tuple[int, str], ...]  # (position, struct code)


_LAYOUTS = {
    event_type: _TypeLayout(
        names=tuple(s.name for s in specs),
        dict_positions=tuple(i for i, s in enumerate(specs) if s.kind == "dict"),
        packed_positions=tuple((i, "i" if s.kind == "packed_int" else "d")
                               for i, s in enumerate(specs) if s.kind in ("packed_int", "packed_float")),
    )
    for event_type, specs in FIELD_SPECS.items()
}
# struct is the fastest way from a Python list to raw bytes (about 3x array.array / numpy);
# one bound pack function per (type code, length), the lengths repeat (max_new_tokens).
_PACKERS: dict[str, dict[int, Callable[..., bytes]]] = {"i": {}, "d": {}}
_STORED_DTYPES = {"i": np.dtype("<i4"), "d": np.dtype("<f8")}


def _new_packer(code: str, length: int) -> Callable[..., bytes]:
    packer = _PACKERS[code][length] = struct.Struct(f"<{length}{code}").pack
    return packer


def pack_numbers(numbers: Sequence[Any], code: str) -> bytes:
    """A packed field's values as stored and hashed: little-endian int32 ("i") or float64 ("d").

    A numpy array is converted in one call (a list costs ~13 ns per number, which at 1,000
    numbers per round was the largest share of an append); the bytes are a copy, so an array
    changed after append cannot change what was hashed.
    """
    if isinstance(numbers, np.ndarray):
        return _pack_array(numbers, code)
    count = len(numbers)
    packer = _PACKERS[code].get(count) or _new_packer(code, count)
    return packer(*numbers)


def _pack_array(values: np.ndarray, code: str) -> bytes:
    stored = _STORED_DTYPES[code]
    if values.dtype == stored and values.ndim == 1:
        return values.tobytes()  # the engine's arrays: int32 ids, float64 log-probs
    if values.ndim != 1:
        raise ValueError(f"a packed round field must be 1-D, got an array of shape {values.shape}")
    if code == "i":
        if values.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got a {values.dtype} array")
        if values.dtype != stored:
            converted = values.astype(stored)
            if not np.array_equal(converted, values):
                raise ValueError("token ids must fit in int32")
            return converted.tobytes()
    elif values.dtype.kind != "f":
        raise TypeError(f"log-probs must be floats, got a {values.dtype} array")
    return values.astype(stored, copy=False).tobytes()


def encode_event(event: Event) -> EncodedEvent:
    event_type = event.event_type
    layout = _LAYOUTS.get(event_type)
    if layout is None or type(event) is not EVENT_TYPES[event_type]:
        raise TypeError(f"{type(event).__name__} is not a storable event type")
    values = event.__dict__
    header = [values[name] for name in layout.names]
    dict_texts: dict[str, str] = {}
    for position in layout.dict_positions:
        text = dumps_json(header[position])
        dict_texts[layout.names[position]] = text
        header[position] = text
    packed: dict[str, bytes | None] = {}
    names = layout.names
    for position, code in layout.packed_positions:
        numbers = header[position]
        if numbers is None:
            packed[names[position]] = None
        else:
            packed[names[position]] = pack_numbers(numbers, code)
            header[position] = len(numbers)
    payload = None if event_type == RoundPlayed.event_type else dumps_json(event.to_dict())
    return EncodedEvent(event_type, header, dict_texts, packed, payload)


# RoundPlayed is nearly every event of a run, so it gets its own encoder: the same values
# and bytes as encode_event (tests hold them equal), without the per-event dicts and objects.
_ROUND_LAYOUT = _LAYOUTS[RoundPlayed.event_type]
_ROUND_VALUES = operator.itemgetter(*_ROUND_LAYOUT.names)
_NO_ROUND_HEADER = (None,) * len(_ROUND_LAYOUT.names)
_NO_ROUND_PACKED = (None,) * len(_ROUND_LAYOUT.packed_positions)


def encode_round(event: RoundPlayed) -> tuple[list[Any], list[bytes | None]]:
    """(header values as hashed and stored, packed lists' bytes in field order) of a round."""
    header = list(_ROUND_VALUES(event.__dict__))
    for position in _ROUND_LAYOUT.dict_positions:
        header[position] = dumps_json(header[position])
    packed: list[bytes | None] = []
    for position, code in _ROUND_LAYOUT.packed_positions:
        numbers = header[position]
        if numbers is None:
            packed.append(None)
        else:
            packed.append(pack_numbers(numbers, code))
            header[position] = len(numbers)
    return header, packed


def canonical_header(
    run_id: str, seq: int, ts: str, schema_version: int, event_type: str, header_values: Sequence[Any]
) -> bytes:
    trailing = _TRAILING_STORED.get(event_type)
    if trailing is not None:
        header_values = _without_trailing_defaults(header_values, trailing)
    return orjson.dumps([run_id, seq, ts, schema_version, event_type, header_values])


def _stored_default(spec: FieldSpec, value: Any) -> Any:
    return dumps_json(value) if spec.kind == "dict" else value


# Per event type, the stored (hashed) form of the defaults of its trailing added fields.
_TRAILING_STORED: dict[str, tuple[Any, ...]] = {}
for _event_type, _trailing in TRAILING_DEFAULTS.items():
    _specs = FIELD_SPECS[_event_type][-len(_trailing):]
    assert tuple(spec.name for spec in _specs) == tuple(name for name, _ in _trailing), "added fields go last"
    _TRAILING_STORED[_event_type] = tuple(_stored_default(spec, value) for spec, (_, value) in zip(_specs, _trailing))


def _without_trailing_defaults(values: Sequence[Any], defaults: tuple[Any, ...]) -> Sequence[Any]:
    """The header without its last fields while they hold the value an older log implies, so
    an event hashes as it did before those fields existed (storage.events.TRAILING_DEFAULTS)."""
    keep = len(values)
    for default in reversed(defaults):
        value = values[keep - 1]
        if type(value) is type(default) and value == default:
            keep -= 1
        else:
            break
    return values if keep == len(values) else list(values[:keep])


def chain_hash(prev_hash: str, header: bytes, packed_buffers: Iterable[Any]) -> str:
    """SHA-256 over prev_hash, the canonical header and the packed lists' raw bytes.

    The packed lists (None: a None list, not hashed) are fed as buffers (bytes or numpy
    slices), never copied; prev_hash and the header go in as one piece, a call fewer.
    """
    digest = hashlib.sha256(prev_hash.encode("ascii") + header)
    for buffer in packed_buffers:
        if buffer is not None:
            digest.update(buffer)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Buffered events -> one Arrow record batch
# ---------------------------------------------------------------------------------------


class _KeptArray:
    """An array kept from flush to flush that a packed column's rows are copied into.

    The copy lands in memory already touched (see SerializeBuffer for why that matters on
    this project's VMs) and becomes the Arrow column's values buffer as it is.
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.array = np.empty(0, dtype)

    def fill(self, pieces: Iterable[bytes | None], count: int) -> np.ndarray:
        if count > len(self.array):
            self.array = np.empty(max(count, len(self.array) * 5 // 4), self.array.dtype)
        memory = memoryview(self.array).cast("B")
        position = 0
        for piece in pieces:
            if piece is not None:
                end = position + len(piece)
                memory[position:end] = piece
                position = end
        return self.array[:count]


class EventBuffer:
    """Appended, not yet flushed events, kept column by column for one record batch.

    `add` stores only references to what `append` already computed for the hash (the
    header values, the packed bytes), no per-event Arrow work; `to_batch` turns each column
    into an Arrow array in one call, so Arrow's per-call overhead is paid once per column
    and flush, not once per field and event. `clear` empties a buffer for reuse; the arrays
    that hold its packed columns at flush are kept.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._kept = [_KeptArray(_STORED_DTYPES[code]) for _, code in _ROUND_LAYOUT.packed_positions]
        self.clear()

    def clear(self) -> None:
        self.seqs: list[int] = []
        self.ts: list[str] = []
        self.event_types: list[str] = []
        self.prev_hashes: list[str] = []
        self.hashes: list[str] = []
        self.payloads: list[str | None] = []
        self.round_headers: list[Sequence[Any]] = []  # per event: RoundPlayed values as hashed
        self.round_packed: list[Sequence[bytes | None]] = []  # per event: packed lists' bytes

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seq: int, ts: str, event_type: str, prev_hash: str, digest: str, payload: str | None,
            round_header: Sequence[Any] | None, round_packed: Sequence[bytes | None] | None) -> None:
        self.seqs.append(seq)
        self.ts.append(ts)
        self.event_types.append(event_type)
        self.prev_hashes.append(prev_hash)
        self.hashes.append(digest)
        self.payloads.append(payload)
        # Other event types have NULL in every round column.
        self.round_headers.append(_NO_ROUND_HEADER if round_header is None else round_header)
        self.round_packed.append(_NO_ROUND_PACKED if round_packed is None else round_packed)

    def extend(self, later: EventBuffer) -> None:
        """Append the events of a buffer that was started after this one."""
        for name in ("seqs", "ts", "event_types", "prev_hashes", "hashes", "payloads", "round_headers",
                     "round_packed"):
            getattr(self, name).extend(getattr(later, name))

    def to_batch(self) -> pa.RecordBatch:
        """The buffered rows as one batch. Its packed columns view arrays this buffer keeps
        and refills at the next to_batch, so write the batch out before that."""
        n = len(self.seqs)
        columns: list[pa.Array] = [
            pa.array([self.run_id] * n, pa.string()),
            pa.array(self.seqs, pa.int64()),
            pa.array(self.ts, pa.string()),
            pa.array([SCHEMA_VERSION] * n, pa.int32()),
            pa.array(self.event_types, pa.string()),
            pa.array(self.prev_hashes, pa.string()),
            pa.array(self.hashes, pa.string()),
            pa.array(self.payloads, pa.string()),
        ]
        # zip(*rows) transposes in C: one tuple per RoundPlayed field, one entry per event.
        header_columns = list(zip(*self.round_headers))
        packed_columns = iter(zip(*self.round_packed))
        kept = iter(self._kept)
        for position, spec in enumerate(ROUND_SPECS):
            if spec.kind in ("packed_int", "packed_float"):
                # the header holds each list's length (None for a None list), the bytes its values
                columns.append(_packed_column(header_columns[position], next(packed_columns), next(kept), spec.arrow_type))
            else:
                columns.append(pa.array(header_columns[position], spec.arrow_type))
        return pa.RecordBatch.from_arrays(columns, schema=SEGMENT_SCHEMA)


def _packed_column(lengths: Sequence[int | None], pieces: Sequence[bytes | None], kept: _KeptArray,
                   arrow_type: pa.ListType) -> pa.Array:
    """A list column from each row's length (None: a None list) and its packed bytes.

    Every buffer is handed to Arrow as it is (from_buffers): pa.array on a numpy array
    costs tens of microseconds per call in pandas-compatibility checks, which at a flush
    of 64 rows was a visible share of it.
    """
    rows = len(lengths)
    has_nulls = None in lengths
    sizes = np.array([0 if n is None else n for n in lengths] if has_nulls else lengths, np.int32)
    offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    count = int(offsets[-1])
    values = pa.Array.from_buffers(arrow_type.value_type, count, [None, pa.py_buffer(kept.fill(pieces, count))])
    validity = None
    if has_nulls:  # Arrow's validity bitmap: bit i (least significant first) set when row i is present
        validity = pa.py_buffer(np.packbits([n is not None for n in lengths], bitorder="little"))
    return pa.ListArray.from_buffers(arrow_type, rows, [validity, pa.py_buffer(offsets)], children=[values])


# ---------------------------------------------------------------------------------------
# One Arrow table of stored rows -> Recorded events, and -> canonical bytes for verify
# ---------------------------------------------------------------------------------------


def _decode_fields(event_type: str, values: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[event_type]
    kwargs = {}
    for spec in FIELD_SPECS[event_type]:
        if spec.name not in values and spec.name in _ADDED_FIELD_DEFAULTS.get(event_type, {}):
            default = _ADDED_FIELD_DEFAULTS[event_type][spec.name]  # an older log
            kwargs[spec.name] = dict(default) if isinstance(default, dict) else default
            continue
        value = values[spec.name]
        if spec.kind == "dict" and isinstance(value, str):
            value = orjson.loads(value)
        if spec.holds_floats:
            value = _restore_float(value)
        kwargs[spec.name] = value
    return cls(**kwargs)


_ADDED_FIELD_DEFAULTS = {event_type: dict(trailing) for event_type, trailing in TRAILING_DEFAULTS.items()}


def table_to_recorded(table: pa.Table) -> list[Recorded]:
    """Decode stored rows (any mix of event types) in their stored order."""
    envelope = {name: table.column(name).to_pylist() for name in
                ("run_id", "seq", "ts", "schema_version", "event_type", "prev_hash", "hash", "payload")}
    round_rows = [i for i, t in enumerate(envelope["event_type"]) if t == RoundPlayed.event_type]
    round_values: dict[str, list[Any]] = {}
    if round_rows:
        rounds_only = table.take(round_rows) if len(round_rows) != table.num_rows else table
        round_values = {name: rounds_only.column(name).to_pylist() for name in ROUND_COLUMNS}
    out: list[Recorded] = []
    next_round = 0
    for i in range(table.num_rows):
        event_type = envelope["event_type"][i]
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r} at seq {envelope['seq'][i]}")
        if event_type == RoundPlayed.event_type:
            values = {name: column[next_round] for name, column in round_values.items()}
            next_round += 1
        else:
            values = orjson.loads(envelope["payload"][i])
        out.append(Recorded(
            run_id=envelope["run_id"][i], seq=envelope["seq"][i], ts=envelope["ts"][i],
            schema_version=envelope["schema_version"][i], prev_hash=envelope["prev_hash"][i],
            hash=envelope["hash"][i], event=_decode_fields(event_type, values),
        ))
    return out


def stored_hashes(table: pa.Table) -> list[str | None]:
    """Recompute every row's hash from what is stored, chaining on the stored prev_hash.

    Packed lists are hashed straight from the Arrow buffers (no Python floats), so this
    runs over a million rounds in reasonable time; other fields are decoded, then encoded
    exactly as `encode_event` does. None marks a row of an unknown event type.
    """
    event_types = table.column("event_type").to_pylist()
    envelope = [table.column(n).to_pylist() for n in ("run_id", "seq", "ts", "schema_version", "prev_hash")]
    payloads = table.column("payload").to_pylist()
    plain_round = {s.name: table.column(s.name).to_pylist() for s in ROUND_SPECS
                   if s.kind not in ("packed_int", "packed_float")}
    packed_round: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for spec in ROUND_SPECS:
        if spec.kind in ("packed_int", "packed_float"):
            column = table.column(spec.name).combine_chunks()
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False)
            packed_round[spec.name] = (offsets, values, column.is_null().to_numpy(zero_copy_only=False))
    out: list[str | None] = []
    for i, event_type in enumerate(event_types):
        run_id, seq, ts, schema_version, prev_hash = (c[i] for c in envelope)
        if event_type == RoundPlayed.event_type:
            header: list[Any] = []
            buffers: list[np.ndarray] = []
            for spec in ROUND_SPECS:
                if spec.name in packed_round:
                    offsets, values, nulls = packed_round[spec.name]
                    if nulls[i]:
                        header.append(None)
                    else:
                        part = values[offsets[i]:offsets[i + 1]]
                        header.append(len(part))
                        buffers.append(part)
                else:
                    header.append(plain_round[spec.name][i])
            head = canonical_header(run_id, seq, ts, schema_version, event_type, header)
            out.append(chain_hash(prev_hash, head, buffers))
        elif event_type in EVENT_TYPES:
            try:
                event = _decode_fields(event_type, orjson.loads(payloads[i]))
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                out.append("")  # an undecodable payload cannot match its hash
                continue
            values = encode_event(event).header_values
            out.append(chain_hash(prev_hash, canonical_header(run_id, seq, ts, schema_version, event_type, values), []))
        else:
            out.append(None)
    return out


# ---------------------------------------------------------------------------------------
# Segment files: names, listing, atomic writes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SegmentFile:
    first_seq: int
    last_seq: int
    level: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first_seq: int, last_seq: int, level: int) -> str:
    return f"{first_seq:012d}-{last_seq:012d}.L{level}.arrow"


def parse_segment_name(log_dir: Path, name: str) -> SegmentFile | None:
    match = _SEGMENT_NAME.match(name)
    if match is None:
        return None
    return SegmentFile(int(match[1]), int(match[2]), int(match[3]), log_dir / name)


def live_segments(all_segments: Iterable[SegmentFile]) -> list[SegmentFile]:
    """Segments in seq order, dropping any whose range lies inside a larger one's.

    A compaction writes the merged segment before deleting the ones it replaces, so for a
    moment (or forever, after a crash at that moment) both exist.
    """
    ordered = sorted(all_segments, key=lambda s: (s.first_seq, -s.last_seq))
    live: list[SegmentFile] = []
    for segment in ordered:
        if live and segment.last_seq <= live[-1].last_seq and segment.first_seq >= live[-1].first_seq:
            continue
        live.append(segment)
    return live


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SerializeBuffer:
    """Memory a segment is serialized into before its one write, kept from flush to flush.

    Why keep it: serializing into newly allocated memory pays a page fault for every 4 kB
    page, and on this project's VMs a first touch costs 10-30x the copy itself (33 MB: about
    4 ms into memory already touched, 10-120 ms into new memory). The IPC stream is sized
    first with a counting stream (no data copied), then written once into this buffer.
    Buffers above KEEP_BYTES are used once and released, to bound what a writer holds.
    """

    KEEP_BYTES = 256 * 2**20

    def __init__(self) -> None:
        self._memory: pa.Buffer | None = None

    def serialize(self, schema: pa.Schema, batches: Sequence[pa.RecordBatch]) -> memoryview:
        counter = pa.MockOutputStream()
        _write_ipc_file(counter, schema, batches)
        size = counter.size()
        memory = self._memory
        if memory is None or memory.size < size:
            # a quarter to spare, so that slowly growing flushes do not reallocate each time
            capacity = size * 5 // 4
            memory = pa.allocate_buffer(capacity if capacity <= self.KEEP_BYTES else size)
            self._memory = memory if memory.size <= self.KEEP_BYTES else None
        _write_ipc_file(pa.FixedSizeBufferWriter(memory), schema, batches)
        return memoryview(memory)[:size]


def _write_ipc_file(sink: Any, schema: pa.Schema, batches: Sequence[pa.RecordBatch]) -> None:
    with pa.ipc.new_file(sink, schema) as ipc:
        for batch in batches:
            ipc.write_batch(batch)


def write_segment_file(
    log_dir: Path, final_name: str, batches: Sequence[pa.RecordBatch], *, sync_directory: bool = True,
    memory: SerializeBuffer | None = None,
) -> Path:
    """Write batches to a temporary name, fsync, rename into place, fsync the directory.

    The file is serialized in memory first (into `memory` when given, see SerializeBuffer)
    and written with one call: the IPC writer emits a write per buffer (over a hundred for
    one segment), each a system call on a file.
    """
    temp_path = log_dir / f"{TEMP_PREFIX}{os.getpid()}-{final_name}"
    first_seqs = [int(b.column(1)[0].as_py()) for b in batches]
    schema = SEGMENT_SCHEMA.with_metadata({BATCH_SEQS_KEY: orjson.dumps(first_seqs)})
    data = (memory or SerializeBuffer()).serialize(schema, batches)
    size = len(data)
    try:
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            if size >= DROP_FROM_CACHE_BYTES:
                _drop_from_page_cache(fd)
        finally:
            os.close(fd)
        final_path = log_dir / final_name
        os.rename(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(log_dir)
    return final_path


# A large segment's pages are dropped from the page cache once it is durable (below).
# Small ones stay cached: they are the per-window flushes that the learner reads next and a
# merge reads back soon, then deletes (which frees their pages anyway); dropping them too
# made flushing every 64 events slower (1.13x the events/s keeping them, median of twelve
# interleaved pairs).
DROP_FROM_CACHE_BYTES = 16 * 2**20


def _drop_from_page_cache(fd: int) -> None:
    """Let the kernel reuse a durable segment's cached pages for the next write.

    A large segment (a merged one, or a buffer of thousands of events) is read later and
    mostly by other processes, so keeping it cached buys little, while a write into new
    page-cache pages costs a page fault per 4 kB: on this project's VMs 33 MB took ~100 ms
    into new pages and ~9 ms into reused ones. Advice only: a no-op where the platform or
    file system has no use for it.
    """
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # the segment is durable already; declined advice changes nothing


def open_segment(segment: SegmentFile) -> SegmentReader:
    """Memory-map a segment; a damaged file is the user's to repair, not a traceback."""
    try:
        return SegmentReader(pa.ipc.open_file(pa.memory_map(str(segment.path), "r")))
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(
            f"{segment.path}: not a readable log segment ({_first_line(error)}); "
            f"run `minmax-engine verify {segment.path.parent.parent}`"
        ) from None


# Round columns added after schema 1 (storage.events.TRAILING_DEFAULTS), last in the schema.
_ADDED_ROUND_COLUMNS = tuple(name for name, _ in TRAILING_DEFAULTS[RoundPlayed.event_type])
_SCHEMA_BEFORE_ADDED = pa.schema(list(SEGMENT_SCHEMA)[: len(SEGMENT_SCHEMA) - len(_ADDED_ROUND_COLUMNS)])


def _written_before_added_columns(schema: pa.Schema) -> bool:
    return schema.equals(_SCHEMA_BEFORE_ADDED, check_metadata=False)


def with_added_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of a segment written before the added round columns, with them at the value an
    older round implies (a round's judge_prompt "", protocol None; NULL on other events)."""
    is_round = [event_type == RoundPlayed.event_type for event_type in batch.column(4).to_pylist()]
    columns = list(batch.columns)
    for name, default in TRAILING_DEFAULTS[RoundPlayed.event_type]:
        columns.append(pa.array([default if round_row else None for round_row in is_round],
                                SEGMENT_SCHEMA.field(name).type))
    return pa.RecordBatch.from_arrays(columns, schema=SEGMENT_SCHEMA)


class SegmentReader:
    """An open segment file whose rows always come in the current schema: a segment written
    before the added round columns existed reads with them filled in (with_added_columns)."""

    def __init__(self, reader: pa.ipc.RecordBatchFileReader) -> None:
        self._reader = reader
        self._upgrade = _written_before_added_columns(reader.schema)
        self.schema = SEGMENT_SCHEMA.with_metadata(reader.schema.metadata) if self._upgrade else reader.schema

    @property
    def num_record_batches(self) -> int:
        return self._reader.num_record_batches

    def get_batch(self, index: int) -> pa.RecordBatch:
        batch = self._reader.get_batch(index)
        return with_added_columns(batch) if self._upgrade else batch

    def read_all(self) -> pa.Table:
        if not self._upgrade:
            return self._reader.read_all()
        return pa.Table.from_batches([self.get_batch(i) for i in range(self.num_record_batches)], schema=self.schema)


def read_segment_range(segment: SegmentFile, first_seq: int, last_seq: int) -> pa.Table:
    """Rows of one segment with first_seq <= seq <= last_seq, reading only the batches needed."""
    reader = open_segment(segment)
    try:
        batch_firsts = orjson.loads(reader.schema.metadata[BATCH_SEQS_KEY])
    except (KeyError, TypeError, orjson.JSONDecodeError):
        batch_firsts = None
    if batch_firsts is None or len(batch_firsts) != reader.num_record_batches:
        wanted = range(reader.num_record_batches)
    else:
        bounds = batch_firsts + [segment.last_seq + 1]
        wanted = [i for i in range(len(batch_firsts)) if bounds[i] <= last_seq and bounds[i + 1] > first_seq]
    try:
        batches = [reader.get_batch(i) for i in wanted]
        table = pa.Table.from_batches(batches, schema=SEGMENT_SCHEMA)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(
            f"{segment.path}: damaged log segment ({_first_line(error)}); "
            f"run `minmax-engine verify {segment.path.parent.parent}`"
        ) from None
    if segment.first_seq >= first_seq and segment.last_seq <= last_seq:
        return table
    seq = table.column("seq").to_numpy()
    # Rows are stored gap-free in seq order, so the window is a zero-copy slice; a damaged
    # segment (verify's business) falls back to a filter.
    start = max(first_seq - int(seq[0]), 0) if len(seq) else 0
    stop = min(last_seq - int(seq[0]) + 1, len(seq)) if len(seq) else 0
    if len(seq) and int(seq[-1]) - int(seq[0]) == len(seq) - 1:
        return table.slice(start, max(stop - start, 0))
    return table.filter(pa.array((seq >= first_seq) & (seq <= last_seq)))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

