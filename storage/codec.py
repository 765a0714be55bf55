"""The event codec: how an event becomes stored columns and hashed bytes, and back.

Every segment has the same wide Arrow schema (`SEGMENT_SCHEMA`): the envelope columns, one
typed column per RoundPlayed field (lists as Arrow lists, token ids int32, log-probs float64
so they round-trip bit for bit, free-form dicts as JSON text), and `payload`, the JSON text
of any other event (those are rare: a few per window). Non-finite floats are kept through
JSON as the strings "NaN", "Infinity" and "-Infinity".

Canonical bytes (what each event's hash covers), in this order:
    prev_hash (64 hex chars, ASCII)
    JSON array [run_id, seq, ts, schema_version, event_type, [field values in declared order]]
        where a dict field is its stored JSON text and a packed numeric list (token ids,
        log-probs) is its length, or null when the list is None
    the packed lists' raw little-endian bytes (int32 ids, float64 log-probs), in field order
Verify recomputes these from the stored columns (storage/verify.py), so any edit to a
stored value shows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import struct
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa

from storage.events import EVENT_TYPES, TRAILING_DEFAULTS, Event, Recorded, RoundPlayed

GENESIS_HASH = "0" * 64  # the prev_hash of seq 0

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
# struct is the fastest way from a Python list to raw bytes (see benchmarks/README.md); one
# bound pack function per (type code, length), as the lengths repeat (max_new_tokens).
_PACKERS: dict[str, dict[int, Callable[..., bytes]]] = {"i": {}, "d": {}}
_STORED_DTYPES = {"i": np.dtype("<i4"), "d": np.dtype("<f8")}


def _new_packer(code: str, length: int) -> Callable[..., bytes]:
    packer = _PACKERS[code][length] = struct.Struct(f"<{length}{code}").pack
    return packer


def pack_numbers(numbers: Sequence[Any], code: str) -> bytes:
    """A packed field's values as stored and hashed: little-endian int32 ("i") or float64 ("d").

    A numpy array is converted in one call rather than number by number; the bytes are a
    copy, so an array changed after append cannot change what was hashed.
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
# Stored rows -> events
# ---------------------------------------------------------------------------------------


def decode_fields(event_type: str, values: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[event_type]
    kwargs = {}
    for spec in FIELD_SPECS[event_type]:
        if spec.name not in values and spec.name in _ADDED_FIELD_DEFAULTS.get(event_type, {}):
            default = _ADDED_FIELD_DEFAULTS[event_type][spec.name]  # an older log
            kwargs[spec.name] = type(default)(default) if isinstance(default, dict | list) else default
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
            hash=envelope["hash"][i], event=decode_fields(event_type, values),
        ))
    return out

