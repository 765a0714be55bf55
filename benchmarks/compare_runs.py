"""Play a tiny run with whichever engine is on PYTHONPATH, or compare two runs' events.

    cd /work/main && PYTHONPATH=/work/main python $WT/benchmarks/compare_runs.py play /tmp/before
    cd $WT && PYTHONPATH=$WT python benchmarks/compare_runs.py play /tmp/after
    PYTHONPATH=$WT python benchmarks/compare_runs.py compare /tmp/before/run /tmp/after/run

A refactor that claims "no behaviour change" shows it here: the two logs must hold the same
events in the same order with the same content. What legitimately differs between two plays
is left out: the envelope's timestamp, hash chain and run id, wall-clock timings (RoundPlayed
timings, the diagnostics' `seconds`, RunFinished's wall_seconds), the run's parent directory
in the recorded config (the model paths under it too), and the package versions (the two trees are different checkouts).
Exit 0 when the events agree, 1 naming the first difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

IGNORED_PAYLOAD_KEYS = {"timings", "wall_seconds", "package_versions"}
IGNORED_DIAGNOSTICS = {"seconds"}


def play(out: Path) -> None:
    """A minmax run of tiny random models: tests/test_game.py's tiny config."""
    import torch

    from engine.game import start_run
    from players import ModelPool
    from tests.test_game import tiny_config
    from tests.tiny_models import build_tiny_lm

    torch.set_num_threads(1)
    # The tests' tiny run, with GAE so the value head and its settings take part too.
    config = tiny_config(build_tiny_lm(out / "model"), out, training={"advantage": "gae"})
    start_run(config, out / "run", pool=ModelPool(cache_dir=out / "cache"))
    print(out / "run")


def _relative_to(value: Any, out: str) -> Any:
    """The recorded config with the play directory's own path replaced by "<out>"."""
    if isinstance(value, dict):
        return {key: _relative_to(item, out) for key, item in value.items()}
    if isinstance(value, str) and value.startswith(out):
        return "<out>" + value[len(out):]
    return value


def comparable(payload: dict[str, Any], out: Path) -> dict[str, Any]:
    kept = {key: value for key, value in payload.items() if key not in IGNORED_PAYLOAD_KEYS}
    if isinstance(kept.get("diagnostics"), dict):
        kept["diagnostics"] = {k: v for k, v in kept["diagnostics"].items() if k not in IGNORED_DIAGNOSTICS}
    if isinstance(kept.get("config"), dict):
        kept["config"] = _relative_to(kept["config"], str(out))
    return kept


def compare(first: Path, second: Path) -> int:
    from storage import RunReader

    a, b = RunReader(first).events(), RunReader(second).events()
    for left, right in zip(a, b):
        if left.seq != right.seq or left.event.event_type != right.event.event_type:
            print(f"seq {left.seq}: {left.event.event_type} vs seq {right.seq}: {right.event.event_type}")
            return 1
        left_payload, right_payload = (
            comparable(left.event.to_dict(), first.parent), comparable(right.event.to_dict(), second.parent)
        )
        if left_payload != right_payload:
            keys = [k for k in left_payload if left_payload.get(k) != right_payload.get(k)]
            keys += [k for k in right_payload if k not in left_payload]
            print(f"seq {left.seq} {left.event.event_type}: differs in {', '.join(keys)}")
            return 1
    if len(a) != len(b):
        print(f"{first} holds {len(a)} events, {second} holds {len(b)}")
        return 1
    print(f"identical in content: {len(a)} events ({', '.join(sorted({item.event.event_type for item in a}))})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("play").add_argument("out", type=Path)
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("first", type=Path)
    compare_parser.add_argument("second", type=Path)
    args = parser.parse_args()
    if args.command == "play":
        play(args.out)
        return 0
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
