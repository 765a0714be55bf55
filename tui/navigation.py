"""Jumps through a run: the keyset page starts up to the last page, and a round by its id.

The rounds table pages by seq ("the next PAGE_SIZE rounds after seq s"), so a jump to the
last page needs the start of every page before it: one pass over the filter's matching seqs,
window by window, keeping every PAGE_SIZE-th. It reads only the table's columns, so a
million-round run takes about as long as counting its rounds.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from tui.run_data import COUNT_WINDOW, TABLE_COLUMNS, RoundFilter, RunData


def _kept_seqs(data: RunData, round_filter: RoundFilter, first: int, last: int) -> list[int]:
    window = data.reader.table(first, last).select(TABLE_COLUMNS)
    return round_filter.apply(window)["seq"].to_pylist()


def page_starts(
    data: RunData, round_filter: RoundFilter, page_size: int, stop: Callable[[], bool] = lambda: False
) -> list[int] | None:
    """The after-seq of every page, first to last ([-1, seq of row 100, seq of row 200, ...]);
    None when `stop` said so between windows."""
    starts, kept, last_seq = [-1], 0, data.last_seq()
    for first in range(0, last_seq + 1, COUNT_WINDOW):
        if stop():
            return None
        for seq in _kept_seqs(data, round_filter, first, min(last_seq, first + COUNT_WINDOW - 1)):
            kept += 1
            if kept % page_size == 0:
                starts.append(seq)
    if len(starts) > 1 and kept % page_size == 0:
        starts.pop()  # the rows end exactly on a page boundary: no empty page after them
    return starts


def seq_of_round(data: RunData, round_id: int) -> int | None:
    """The seq of training round `round_id` (the last one logged, if a resume replayed it)."""
    last_seq = data.last_seq()
    found = None
    for first in range(0, last_seq + 1, COUNT_WINDOW):
        window = data.reader.table(first, min(last_seq, first + COUNT_WINDOW - 1)).select(
            ["seq", "event_type", "phase", "round_id"]
        )
        match = pc.and_kleene(
            pc.and_kleene(pc.equal(window["event_type"], "RoundPlayed"), pc.equal(window["phase"], "train")),
            pc.equal(window["round_id"], pa.scalar(round_id, window.schema.field("round_id").type)),
        )
        seqs = window.filter(pc.fill_null(match, False))["seq"].to_pylist()
        if seqs:
            found = seqs[-1]
    return found
