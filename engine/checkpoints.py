"""Checkpoints: everything a resumed run needs that the event log does not hold.

    path = save_checkpoint(run_dir / "checkpoints" / "3", players, learners, dual, extra={"next_round_id": 96})
    extra = load_checkpoint(path, players, learners, dual)

A checkpoint directory holds:
    adapters/<role>/          each player's LoRA adapter (Player.save_adapter)
    learners/<role>.pt        each learner's optimiser state (+ value head, shuffle generator)
    state.pt                  the dual ascent state and the torch / numpy / python RNG states
    checkpoint.json           roles, λ and the caller's `extra` (written last)

It is written under a temporary name beside its final one, every file fsynced, and renamed
into place (the rename fsynced too), so a directory with the final name is always complete
and on disk: a run killed half-way through a save leaves only a `.partial` directory, which
`load_checkpoint` never reads and a resume removes. A save that fails (a full disk) removes
its `.partial` itself and raises a one-line UserError naming the disk problem.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.lagrangian import DualAscent
from engine.ppo import PPOLearner
from players import Player
from storage.errors import UserError
from storage.layout import fsync_directory as _fsync_directory

MANIFEST = "checkpoint.json"
STATE_FILE = "state.pt"
PARTIAL_SUFFIX = ".partial"
# Less than this free after a failed save: the disk was full, whatever the library said.
_NEARLY_FULL_BYTES = 1 << 20


def _rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state holds an ndarray; as lists it loads with torch.load(weights_only=True)
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    version, *rest = states["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    directory: Path | str,
    players: Mapping[str, Player],
    learners: Mapping[str, PPOLearner],
    dual: DualAscent | None,
    extra: Mapping[str, Any],
) -> Path:
    """Write a complete checkpoint at `directory` (which must not exist yet); returns it."""
    directory = Path(directory)
    if directory.exists():
        raise UserError(f"{directory}: a checkpoint already exists here; checkpoints are never overwritten")
    partial = directory.with_name(directory.name + PARTIAL_SUFFIX)
    if partial.exists():
        shutil.rmtree(partial)  # left by a save that was killed: never complete, never read
    try:
        partial.mkdir(parents=True)
        _write_contents(partial, players, learners, dual, extra)
        _fsync_tree(partial)
    except Exception as error:  # noqa: BLE001 - a disk problem becomes a UserError below
        shutil.rmtree(partial, ignore_errors=True)  # frees the space it took, too
        problem = _disk_problem(directory, error)
        if problem is None:
            raise
        raise problem from None

    os.replace(partial, directory)  # atomic on one filesystem: the checkpoint appears whole
    _fsync_directory(directory.parent)
    return directory


def _write_contents(
    partial: Path,
    players: Mapping[str, Player],
    learners: Mapping[str, PPOLearner],
    dual: DualAscent | None,
    extra: Mapping[str, Any],
) -> None:
    for role, player in players.items():
        player.save_adapter(partial / "adapters" / role)
    (partial / "learners").mkdir()
    for role, learner in learners.items():
        torch.save(learner.state_dict(), partial / "learners" / f"{role}.pt")
    torch.save(
        {"dual": None if dual is None else dual.state_dict(), "rng": _rng_states()},
        partial / STATE_FILE,
    )
    manifest = {
        "players": sorted(players),
        "learners": sorted(learners),
        "lambda_value": None if dual is None else dual.value,
        "extra": dict(extra),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _fsync_tree(root: Path) -> None:
    """Every file and directory under root on disk before the rename publishes it."""
    for directory, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_directory(Path(directory))


def _disk_problem(directory: Path, error: Exception) -> UserError | None:
    """A UserError for an error that the disk caused; None for any other error (a bug).

    torch and safetensors report a full disk in their own words (torch: "unexpected pos
    416512 vs 416404"), so the free space decides, not the message."""
    free = shutil.disk_usage(directory.parent).free
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or free < _NEARLY_FULL_BYTES:
        problem = f"the disk is full ({free // 1024} kB free on its filesystem); free disk space"
    elif isinstance(error, OSError):
        problem = f"{error.strerror or error}; fix the path or its permissions"
    else:
        return None
    return UserError(f"{directory}: cannot write the checkpoint: {problem}, then "
                     f"continue with `minmax-engine play --resume {directory.parent.parent}`")


def load_checkpoint(
    directory: Path | str,
    players: Mapping[str, Player],
    learners: Mapping[str, PPOLearner],
    dual: DualAscent | None,
) -> dict[str, Any]:
    """Restore adapters, learner states, λ and RNG states; returns the `extra` saved with them."""
    directory = Path(directory)
    manifest_file = directory / MANIFEST
    if not manifest_file.is_file():
        raise UserError(f"{directory}: not a complete checkpoint (no {MANIFEST}); resume from another CheckpointSaved")
    manifest = json.loads(manifest_file.read_text())
    if sorted(players) != manifest["players"] or sorted(learners) != manifest["learners"]:
        raise UserError(
            f"{manifest_file}: saved for players {manifest['players']}, this run has {sorted(players)}; "
            "resume with the mode and config the run started with"
        )
    for role, player in players.items():
        player.load_adapter(directory / "adapters" / role)
    for role, learner in learners.items():
        learner.load_state_dict(torch.load(directory / "learners" / f"{role}.pt", weights_only=True))
    state = torch.load(directory / STATE_FILE, weights_only=True)
    if (state["dual"] is None) != (dual is None):
        raise UserError(f"{manifest_file}: the checkpoint and this run disagree on whether λ is trained (mode)")
    if dual is not None:
        dual.load_state_dict(state["dual"])
    _restore_rng_states(state["rng"])
    return dict(manifest["extra"])
