"""The game loop: TTUR PPO for the policy and the monitor, dual ascent on λ (GAME.md §3).

    minmax-engine play --config configs/tiny.toml

Read this file top to bottom to see the game. One run is:

    RunStarted
    the judge's calibration (content-free answers)       -> JudgeCalibrated
    [training.eval_at_start] the untrained adapters, evaluated as below
                                                         -> eval RoundPlayed…, EvaluationCompleted
    for each window w of B fresh rounds (states cycled through the train split):
        play the B rounds with the current adapters     -> B × RoundPlayed, flushed
            (the policy's answers to all k windows of its period are drawn when the period's
            first window is played: [training] policy_generation_rows)
        a player collapsing in window w                  -> DiagnosticRaised   [when it starts]
        δ below what window 0's critiques reach          -> DiagnosticRaised   [window 0, minmax]
        monitor: PPO on window w, read back from the log -> MonitorUpdated     [minmax only]
        dual ascent on λ from window w's mean f          -> LambdaUpdated      [minmax only]
        λ at λ_max, or rising while the violation holds  -> DiagnosticRaised   [when it starts]
        every k-th window (and after the last one):
            policy: PPO on the last k windows            -> PolicyUpdated
            every eval_every policy updates: the eval split, greedy + n sampled answers per
            state, judged on O alone (deployment) and, minmax only, on O and O′ (monitored)
                                                         -> eval RoundPlayed…, EvaluationCompleted
                                                            per protocol
            every checkpoint_every policy updates (and at the end)
                                                         -> CheckpointSaved
    RunFinished  (or RunFailed, then the exception goes on)

Why this shape (GAME.md §3): every monitor update trains on rounds it has not seen, played by
the monitor as it is now (fresh play, not k epochs over one stale batch); the policy's k
windows are all on-policy for it because it did not change while they were played. rlhf mode
is the same loop without the monitor and λ, so its rows line up with a minmax run's.

Learners never train on in-memory rounds: they read the window back through RunReader, so a
learner in another process reading the same log computes the same update.

Resume (`play --resume RUN`). Checkpoints are taken when the run starts (checkpoint 0: the
initial adapters, optimisers and RNG states) and right after a policy update, when every
round logged so far has been trained on. A checkpoint counts once its CheckpointSaved is
flushed: its directory is written under a temporary name, fsynced and renamed first, so a
directory the log names is always whole (README "What survives what"). Events a killed run
logged after its last CheckpointSaved (rounds, monitor and λ updates that the checkpoint
does not contain) are *superseded*: the resumed run appends RunResumed(checkpoint_seq,
discarded_after_seq = checkpoint_seq, next_round_id) and plays the same schedule positions
again from the checkpoint. The superseded rounds keep their round ids, and new rounds take
ids after the highest id ever logged, so round ids stay unique across the log; folds skip
every event with discarded_after_seq < seq < RunResumed.seq. Sequence numbers simply
continue. Each window's generation seed derives from its schedule position (the policy's
period draw from its first window's), and a checkpoint is always at a period boundary, so
the replayed windows sample from the same seeds, in the same batches, as the lost ones: with the adapters, optimisers and RNG
states restored, the resumed run replays exactly what an uninterrupted run plays
(tests/test_game_resume.py, tests/test_crash_suite.py). Checkpoints live in checkpoints/<policy version>, and in
checkpoints/<version>-resumed<seq> after a resume (a killed run may have left a directory it
never logged). A finished run is never resumed, whatever was appended after RunFinished (a
later `eval`).

Why one file over 500 lines: the game loop is meant to be read in one place, top to bottom
(the schedule, the loop, evaluation, checkpoints, then the entry points that open, resume and
evaluate a run); they share `Game` and `Progress`, and splitting them would send a reader of
one round through several files. The parts that stand alone already live apart (rounds in
engine/round.py, PPO in engine/ppo.py, λ in engine/lagrangian.py, payoffs in engine/payoffs.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from engine.checkpoints import PARTIAL_SUFFIX, load_checkpoint, save_checkpoint
from engine.config import RunConfig, recorded_config
from engine.data import Dataset, State, fit_stories, read_dataset
from engine.devices import THREADS_ENVIRONMENT_VARIABLE, resolve_placements
from engine.diagnostics import (
    COLLAPSE_KINDS,
    LAMBDA_KINDS,
    REACH_KINDS,
    Diagnostic,
    collapse_diagnostics,
    lambda_diagnostics,
    reach_diagnostics,
)
from engine.lagrangian import DualAscent
from engine.metrics import window_counts, window_metrics
from engine.replay import superseded_seqs
from engine.payoffs import monitor_rollouts, policy_rollouts
from engine.ppo import PPOLearner, PPOSettings
from engine.round import (
    DrawnAnswers,
    RoundSettings,
    ScheduledRound,
    Table,
    answer_and_critique,
    draw_answers,
    judged_rounds,
    play_rounds,
)
from engine.story_budget import story_budget
from engine.trackers import Trackers, open_trackers
from players import ModelPool, Player
from players.cpu_linear import CPU_LINEAR_ENVIRONMENT_VARIABLE, cpu_linear_choice
from referees import Judge, RewardModel
from referees.calibration import NO_CALIBRATION, contextual_calibration
from storage import RunReader, RunWriter
from storage.errors import UserError
from storage.events import (
    CheckpointSaved,
    DiagnosticRaised,
    EvaluationCompleted,
    Event,
    JudgeCalibrated,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Protocol,
    Recorded,
    RoundPlayed,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)

CHECKPOINTS_DIR = "checkpoints"
Announce = Callable[[str], None]  # one line for the user (the play command prints it)
PACKAGES_RECORDED = ("torch", "transformers", "peft", "trl", "duckdb", "pyarrow", "pydantic", "minmax-engine")


# ---------------------------------------------------------------------------------------
# The schedule: which state every training round plays. A pure function of the config, so
# a resumed run continues at the exact position where its checkpoint left off.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    train: Sequence[State]
    num_epochs: int
    samples_per_state: int
    window_size: int  # B
    monitor_updates_per_policy: int  # k
    seed: int

    @property
    def total_rounds(self) -> int:
        return self.num_epochs * len(self.train) * self.samples_per_state

    @property
    def n_windows(self) -> int:
        return math.ceil(self.total_rounds / self.window_size)

    def window_positions(self, window: int) -> range:
        start = window * self.window_size
        return range(start, min(start + self.window_size, self.total_rounds))

    def policy_updates_after(self, window: int) -> bool:
        """After every k-th window, and after the last (a short final group is not wasted)."""
        return (window + 1) % self.monitor_updates_per_policy == 0 or window == self.n_windows - 1

    def policy_period(self, window: int) -> range:
        """The windows the policy plays unchanged, `window` among them: from one policy update
        (or the start) to the next."""
        start = window - window % self.monitor_updates_per_policy
        return range(start, min(start + self.monitor_updates_per_policy, self.n_windows))

    def state_at(self, position: int) -> tuple[State, int]:
        """The state and sample index of the round at `position`; states reshuffled per epoch."""
        per_epoch = len(self.train) * self.samples_per_state
        epoch, within = divmod(position, per_epoch)
        order = list(range(len(self.train)))
        random.Random(derived_seed(self.seed, "epoch-order", epoch)).shuffle(order)
        state_index, sample_index = divmod(within, self.samples_per_state)
        return self.train[order[state_index]], sample_index


def derived_seed(seed: int, purpose: str, number: int) -> int:
    """A 63-bit seed for one purpose and number; independent of any global RNG state."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------------------------------
# The log: every event goes to the run's log and, once flushed, to the trackers, in order.
# ---------------------------------------------------------------------------------------


class RunLog:
    """The run's writer and trackers. Trackers see an event only once it is durable: `append`
    buffers it, `flush` writes the log and then publishes what it wrote, so no console line
    ever reports a window, checkpoint or failure that a crash could still take back."""

    def __init__(self, run_dir: Path, writer: RunWriter, trackers: Trackers) -> None:
        self.writer = writer
        self.trackers = trackers
        self.reader = RunReader(run_dir)
        self.unpublished: list[Recorded] = []

    def append(self, event: Event) -> Recorded:
        recorded = self.writer.append(event)
        self.unpublished.append(recorded)
        return recorded

    def flush(self) -> None:
        with _interrupt_deferred():  # a Ctrl-C mid-flush would leave a segment half-renamed
            self.writer.flush()
        self._publish()

    def close(self) -> None:
        """Flush, release the run and close the trackers; events that could not be flushed
        are never published."""
        try:
            with _interrupt_deferred():
                self.writer.close()
            self._publish()
        finally:
            self.unpublished = []
            self.trackers.close()

    def _publish(self) -> None:
        published, self.unpublished = self.unpublished, []
        for recorded in published:
            self.trackers.publish(recorded)


class _interrupt_deferred:  # noqa: N801 - used as a `with` statement, reads as a phrase
    """Ctrl-C (SIGINT) waits until the block is done, then raises KeyboardInterrupt as usual.

    Only the main thread can handle signals; elsewhere the block runs as it is.
    """

    def __enter__(self) -> None:
        self.received = False
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous: Any = signal.signal(signal.SIGINT, self._note)
        return None

    def _note(self, signum: int, frame: object) -> None:
        self.received = True

    def __exit__(self, *exc_info: object) -> bool:
        if self.installed:
            # None: the handler was not set from Python; the default one is what it was
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.previous is None else self.previous)
        if self.received and exc_info[0] is None:
            raise KeyboardInterrupt
        return False


# Crash-suite hook (tests/test_crash_suite.py): MINMAX_ENGINE_TEST_KILL_AT=<moment>[:<n>]
# kills this process with SIGKILL the n-th time (default 1st) it reaches `moment`;
# MINMAX_ENGINE_TEST_STOP_AT stops it with SIGSTOP there instead (the test continues it).
# Unset, as in every real run, a moment costs one test of an empty dict.
_TEST_HOOKS = {
    name: os.environ[name].rpartition(":") if ":" in os.environ[name] else (os.environ[name], ":", "1")
    for name in ("MINMAX_ENGINE_TEST_KILL_AT", "MINMAX_ENGINE_TEST_STOP_AT")
    if os.environ.get(name)
}
_moments_reached: dict[str, int] = {}


def _test_moment(moment: str) -> None:
    if not _TEST_HOOKS:
        return
    _moments_reached[moment] = _moments_reached.get(moment, 0) + 1
    for name, (wanted, _, count) in _TEST_HOOKS.items():
        if wanted == moment and _moments_reached[moment] == int(count):
            os.kill(os.getpid(), signal.SIGKILL if name == "MINMAX_ENGINE_TEST_KILL_AT" else signal.SIGSTOP)


# ---------------------------------------------------------------------------------------
# Progress: what the loop carries from window to window, and what a checkpoint restores.
# ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    position: int = 0  # next schedule position to play
    next_round_id: int = 0  # train round ids, unique over the whole log
    next_eval_round_id: int = 0  # eval round ids count separately
    policy_version: int = 0
    monitor_version: int = 0
    policy_first_seq: int | None = None  # first seq of the rounds the policy has not trained on
    last_trained_seq: int = -1  # seq of the last round already trained on


# ---------------------------------------------------------------------------------------
# Setting the table: players, referees, learners, λ
# ---------------------------------------------------------------------------------------


def set_table(config: RunConfig, pool: ModelPool) -> Table:
    """Load the models: two players (one in rlhf mode) and two frozen referees."""
    models = {
        "policy": config.policy.model,
        # rlhf mode loads no monitor, so it must not claim a GPU of its own
        "monitor": config.monitor.model if config.mode == "minmax" else config.policy.model,
        "reward": config.reward.model,
        "judge": config.judge.model,
    }
    placements = resolve_placements(config.devices, models, gpu_count=torch.cuda.device_count())
    policy = Player.create(
        pool, role="policy", config=config.policy,
        device=placements["policy"].device, dtype=placements["policy"].dtype,
    )
    monitor = None
    if config.mode == "minmax":
        monitor = Player.create(
            pool, role="monitor", config=config.monitor,
            device=placements["monitor"].device, dtype=placements["monitor"].dtype,
        )
    reward = RewardModel.create(
        pool, config=config.reward, device=placements["reward"].device, dtype=placements["reward"].dtype
    )
    judge = Judge.create(pool, config=config.judge, device=placements["judge"].device, dtype=placements["judge"].dtype)
    return Table(policy=policy, monitor=monitor, reward=reward, judge=judge)


def ppo_settings(config: RunConfig, role: str, device: torch.device | str = "cpu") -> PPOSettings:
    """A learner's settings, all from the validated config: each player its own learning rate,
    KL coefficient and temperature; the other PPO knobs are shared. `device`: the player's."""
    training = config.training
    player = config.policy if role == "policy" else config.monitor
    return PPOSettings(
        learning_rate=training.policy_learning_rate if role == "policy" else training.monitor_learning_rate,
        kl_coef=training.kl_coef_policy if role == "policy" else training.kl_coef_monitor,
        ppo_epochs=training.ppo_epochs,
        minibatch_size=training.minibatch_size,
        clip_range=training.clip_range,
        advantage=training.advantage,
        gamma=training.gamma,
        gae_lambda=training.gae_lambda,
        value_coef=training.value_coef,
        max_grad_norm=training.max_grad_norm,
        tis_cap=training.tis_cap,
        temperature=player.temperature,  # log-probs of logits / T, as generation recorded them
        payoff_grad_norm_every=training.payoff_grad_norm_every,
        reference_cache_bytes=reference_cache_mib(training.reference_cache_mib, torch.device(device)) * 2**20,
        seed=derived_seed(config.seed, f"{role}-minibatches", 0),
    )


# The reference's prompt cache on a CPU base unless the config says otherwise (MiB).
DEFAULT_CPU_REFERENCE_CACHE_MIB = 1024


def reference_cache_mib(configured: int | None, device: torch.device) -> int:
    """[training] reference_cache_mib as it applies to a player on `device`."""
    if configured is not None:
        return configured
    return DEFAULT_CPU_REFERENCE_CACHE_MIB if device.type == "cpu" else 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------
# The game
# ---------------------------------------------------------------------------------------


class Game:
    def __init__(
        self, config: RunConfig, table: Table, dataset: Dataset, log: RunLog, run_dir: Path, *, pool: ModelPool | None = None
    ) -> None:
        self.config = config
        self.table = table
        self.dataset = dataset
        self.log = log
        self.run_dir = run_dir
        pool = pool or ModelPool()
        # The CPU linear kernel the players and referees were loaded with (recorded in RunStarted).
        self.cpu_linear = pool.cpu_linear
        training = config.training
        if not dataset.train:
            raise UserError(f"data.dataset = {dataset.name!r}: no train states after the split; use more states")
        self.schedule = Schedule(
            train=dataset.train,
            num_epochs=training.num_epochs,
            samples_per_state=training.samples_per_state,
            window_size=training.window_size,
            monitor_updates_per_policy=training.monitor_updates_per_policy,
            seed=config.seed,
        )
        # TTUR: separate learners, optimisers and learning rates per player.
        self.policy_learner = PPOLearner(table.policy, ppo_settings(config, "policy", table.policy.device))
        self.monitor_learner = (
            PPOLearner(table.monitor, ppo_settings(config, "monitor", table.monitor.device)) if table.monitor is not None else None
        )
        self.dual = DualAscent(config.lagrangian)
        self.lambda_history: list[LambdaUpdated] = []  # engine/diagnostics.py reads it
        self.diagnostics_holding: set[tuple[str, str]] = set()  # (kind, role) raised and still holding
        self.progress = Progress()
        # The policy's answers to its current period's windows, with the policy version that
        # drew them (see period_answers).
        self.drawn: tuple[range, int, DrawnAnswers] | None = None
        self.checkpoint_suffix = ""  # "-resumed<seq>" after a resume (see save_checkpoint)
        self.started = time.perf_counter()
        # Where rounds are played: at this table, or ([cluster] backend = "ray") in Ray actors
        # holding copies of the players and referees (engine/cluster.py): the players then
        # generate through the actors' rollout backend, and the referees score there.
        self.actors = None
        self.seated = table
        if config.cluster.backend == "ray":
            from engine.cluster import seat_roles

            self.actors = seat_roles(config, table, pool.cache_dir, str(run_dir), self.cpu_linear)
            self.seated = self.actors.table
        try:
            self.publish_adapters()
        except BaseException:
            self.release_actors()  # a Game that never existed leaves no actors behind
            raise

    def publish_adapters(self) -> None:
        """Hand both players' adapters as they are now to whatever backend generates for them
        (players/backend.py); after each update only the updated one is handed over."""
        self.table.policy.publish_adapter(self.progress.policy_version)
        if self.table.monitor is not None:
            self.table.monitor.publish_adapter(self.progress.monitor_version)

    @property
    def minmax(self) -> bool:
        return self.table.monitor is not None

    # --- the loop -----------------------------------------------------------------------

    def train(self) -> RunFinished:
        """Play and learn window by window until the schedule is done."""
        first_window = self.progress.position // self.schedule.window_size
        if first_window == 0 and self.config.training.eval_at_start:
            # After checkpoint 0, so a run killed before its first update replays it on resume.
            self.evaluate(checkpoint=None)
        for window in range(first_window, self.schedule.n_windows):
            first_seq, last_seq = self.play_window(window)
            window_rounds = self.read_rounds(first_seq, last_seq)
            self.raise_diagnostics(window, COLLAPSE_KINDS, collapse_diagnostics(window_rounds, self.config.training))
            if window == 0 and self.minmax:
                reach = reach_diagnostics(window_rounds, self.config.game.alpha, self.config.lagrangian.delta)
                self.raise_diagnostics(window, REACH_KINDS, reach)
            if self.progress.policy_first_seq is None:
                self.progress.policy_first_seq = first_seq
            if self.minmax:
                self.update_monitor(first_seq, last_seq)
            if self.schedule.policy_updates_after(window):
                self.update_policy(self.progress.policy_first_seq, last_seq)
                self.progress.policy_first_seq = None
                self.after_policy_update(is_last=window == self.schedule.n_windows - 1)
        finished = RunFinished(
            rounds=self.progress.position,
            policy_updates=self.progress.policy_version,
            monitor_updates=self.progress.monitor_version,
            wall_seconds=time.perf_counter() - self.started,
        )
        self.log.append(finished)
        _test_moment("run-finished-appended")
        self.log.flush()
        return finished

    def play_window(self, window: int) -> tuple[int, int]:
        """Play window `window`'s fresh rounds with the current adapters; returns their seq range."""
        positions = self.schedule.window_positions(window)
        scheduled = []
        for offset, position in enumerate(positions):
            state, sample_index = self.schedule.state_at(position)
            scheduled.append(
                ScheduledRound(
                    round_id=self.progress.next_round_id + offset,
                    window=window,
                    state=state,
                    sample_index=sample_index,
                )
            )
        rounds = play_rounds(
            self.seated,
            scheduled,
            self.round_settings(phase="train", sample=True, seed=derived_seed(self.config.seed, "window", positions.start)),
            drawn=self.period_answers(window),
        )
        recorded = [self.log.append(round_) for round_ in rounds]
        _test_moment("window-appended")
        self.log.flush()  # durable and visible to the learners' reader
        self.progress.position = positions.stop
        self.progress.next_round_id += len(rounds)
        return recorded[0].seq, recorded[-1].seq

    def period_answers(self, window: int) -> DrawnAnswers:
        """The policy's answers to window `window`'s rounds, drawn with the rest of its policy
        period's when the first of them is asked for, policy_generation_rows at a time.

        The draw is a pure function of the period (its states, each chunk's seed from its first
        round's position) and of the policy as it is throughout the period, so a run resumed at
        a checkpoint (always a period boundary) draws exactly what the lost run drew. With k = 1,
        or chunks of B rows, it is the per-window draw: same batches, same seeds.
        """
        period = self.schedule.policy_period(window)
        first = self.schedule.window_positions(period.start).start
        if self.drawn is None or self.drawn[0] != period:
            positions = range(first, self.schedule.window_positions(period[-1]).stop)
            states = [self.schedule.state_at(position)[0] for position in positions]
            rows = self.config.training.policy_generation_rows or len(positions)
            answers = DrawnAnswers.joined([
                draw_answers(self.seated.policy, states[start:start + rows], sample=True,
                             seed=derived_seed(self.config.seed, "window", positions[start]))
                for start in range(0, len(positions), rows)
            ])
            self.drawn = (period, self.progress.policy_version, answers)
        _, version, answers = self.drawn
        if version != self.progress.policy_version:
            raise RuntimeError(f"window {window}'s answers were drawn by policy version {version}, "
                               f"but version {self.progress.policy_version} plays it")
        positions = self.schedule.window_positions(window)
        return answers.rows(positions.start - first, positions.stop - first)

    def update_monitor(self, first_seq: int, last_seq: int) -> None:
        """PPO on one fresh window, then one dual-ascent step from that window's mean f."""
        assert self.monitor_learner is not None and self.table.monitor is not None
        rounds = self.read_rounds(first_seq, last_seq)
        diagnostics = self.monitor_learner.update(
            monitor_rollouts(rounds, unparsed_penalty=self.config.game.unparsed_penalty)
        )
        _test_moment("monitor-updated")
        self.progress.monitor_version += 1
        self.table.monitor.publish_adapter(self.progress.monitor_version)  # to whatever backend generates
        self.log.append(
            MonitorUpdated(
                version=self.progress.monitor_version,
                round_ids=[round_.round_id for round_ in rounds],
                first_seq=first_seq,
                last_seq=last_seq,
                diagnostics=_plain_floats(diagnostics),
                **_mismatch_fields(self.monitor_learner),
            )
        )
        mean_f = sum(round_.fidelity_penalty or 0.0 for round_ in rounds) / len(rounds)
        step = self.dual.step(mean_f)
        lambda_updated = LambdaUpdated(
            old=step.old,
            new=step.new,
            mean_f=mean_f,
            delta=self.config.lagrangian.delta,
            monitor_version=self.progress.monitor_version,
            applied=step.applied,
        )
        self.log.append(lambda_updated)
        self.lambda_history.append(lambda_updated)
        self.raise_diagnostics(
            rounds[0].window, LAMBDA_KINDS, lambda_diagnostics(self.lambda_history, self.config.lagrangian)
        )
        self.log.flush()

    def raise_diagnostics(self, window: int, checked: frozenset[str], found: list[Diagnostic]) -> None:
        """Log each diagnostic when it starts to hold (of the kinds just checked); stop on a
        collapse if configured. A condition that stops holding may be raised again later."""
        now = {(diagnostic.kind, diagnostic.role) for diagnostic in found}
        self.diagnostics_holding = {held for held in self.diagnostics_holding if held[0] not in checked or held in now}
        raised = [d for d in found if (d.kind, d.role) not in self.diagnostics_holding]
        for diagnostic in raised:
            self.diagnostics_holding.add((diagnostic.kind, diagnostic.role))
            self.log.append(
                DiagnosticRaised(
                    kind=diagnostic.kind,
                    role=diagnostic.role,
                    message=diagnostic.message,
                    window=window,
                    values=_plain_floats(diagnostic.values),
                )
            )
        if raised:
            self.log.flush()
        collapsed = [d for d in found if d.kind == "collapse"]
        if collapsed and self.config.training.stop_on_collapse:
            raise UserError(f"{collapsed[0].message}; the run stopped (training.stop_on_collapse = true)")

    def update_policy(self, first_seq: int, last_seq: int) -> None:
        """PPO on the last k windows: all played by the policy as it is now."""
        rounds = self.read_rounds(first_seq, last_seq)
        diagnostics = self.policy_learner.update(policy_rollouts(rounds))
        self.progress.policy_version += 1
        self.table.policy.publish_adapter(self.progress.policy_version)  # to whatever backend generates
        self.progress.last_trained_seq = last_seq
        self.log.append(
            PolicyUpdated(
                version=self.progress.policy_version,
                round_ids=[round_.round_id for round_ in rounds],
                first_seq=first_seq,
                last_seq=last_seq,
                diagnostics=_plain_floats(diagnostics),
                **_mismatch_fields(self.policy_learner),
            )
        )
        self.log.flush()

    def after_policy_update(self, is_last: bool) -> None:
        version = self.progress.policy_version
        training = self.config.training
        if training.eval_every and version % training.eval_every == 0:
            self.evaluate(checkpoint=None)
        if version % training.checkpoint_every == 0 or is_last:
            self.save_checkpoint()

    def read_rounds(self, first_seq: int, last_seq: int) -> list[RoundPlayed]:
        """The training rounds in a seq range, read back from the log (never from memory)."""
        recorded = self.log.reader.rounds(first_seq, last_seq, phase="train")
        rounds = [item.event for item in recorded]
        assert rounds and all(isinstance(round_, RoundPlayed) for round_ in rounds)
        return rounds  # type: ignore[return-value]

    def round_settings(self, *, phase: str, sample: bool, seed: int) -> RoundSettings:
        return RoundSettings(
            game=self.config.game,
            phase=phase,  # type: ignore[arg-type]
            lambda_value=self.dual.value if self.minmax else 0.0,
            policy_version=self.progress.policy_version,
            monitor_version=self.progress.monitor_version,
            sample=sample,
            seed=seed,
        )

    # --- evaluation ---------------------------------------------------------------------

    def evaluate(
        self, checkpoint: str | None, states: Sequence[State] | None = None, dataset_name: str | None = None
    ) -> list[EvaluationCompleted]:
        """Evaluate the current adapters on held-out states; nothing trains on it (GAME.md §4).

        Per state the policy answers n + 1 times (the greedy answer, sample_index 0, and n
        answers sampled at its play temperature, n = training.eval_samples_per_state), so
        every rate has a real denominator. Each answer is critiqued once (minmax) and scored
        by the judge twice: *deployment*, reading question, choices and O only, in both
        modes (the headline); *monitored*, also reading O′, in minmax mode only. The log gets
        the deployment rounds and their EvaluationCompleted, then the monitored ones and
        theirs. Sampling seeds derive from the seed, the adapter versions and the batch, so
        an evaluation replayed after a resume, or by `minmax-engine eval` on the checkpoint
        of the same versions, samples the same answers.
        """
        states = list(self.dataset.eval if states is None else states)
        if not states:
            raise UserError(
                f"dataset {self.dataset.name!r} has no eval states; raise data.eval_fraction or use more states"
            )
        answers_per_state = self.config.training.eval_samples_per_state + 1
        n_rounds = len(states) * answers_per_state
        deployment: list[RoundPlayed] = []
        monitored: list[RoundPlayed] = []
        for scheduled, settings in self._eval_batches(states, answers_per_state):
            answered = answer_and_critique(self.seated, scheduled, settings)
            # Each answer judged twice: on O alone, then (minmax) on O and O′. The monitored
            # round of an answer takes the id n_rounds after its deployment round's.
            rounds = judged_rounds(self.seated, answered, settings, with_critique=False, protocol="deployment")
            for round_ in rounds:
                self.log.append(round_)
            _test_moment("eval-rounds-appended")
            deployment.extend(rounds)
            if self.minmax:
                ids = [item.round_id + n_rounds for item in scheduled]
                monitored.extend(
                    judged_rounds(self.seated, answered, settings, with_critique=True, protocol="monitored", round_ids=ids)
                )
        completed = [self._evaluation_completed("deployment", deployment, checkpoint, dataset_name, answers_per_state)]
        if self.minmax:
            for round_ in monitored:
                self.log.append(round_)
            completed.append(self._evaluation_completed("monitored", monitored, checkpoint, dataset_name, answers_per_state))
        self.progress.next_eval_round_id += len(deployment) + len(monitored)
        self.log.flush()
        return completed

    def _eval_batches(
        self, states: Sequence[State], answers_per_state: int
    ) -> Iterator[tuple[list[ScheduledRound], RoundSettings]]:
        """The greedy answers of all states, then their samples, `eval_batch_size` rows at a time.
        Seeds name the adapter versions and the batch, never the global RNG."""
        batch_size = self.config.training.eval_batch_size
        purpose = f"eval:policy{self.progress.policy_version}:monitor{self.progress.monitor_version}"
        next_id = self.progress.next_eval_round_id
        greedy = [(state, 0) for state in states]
        sampled = [(state, index) for state in states for index in range(1, answers_per_state)]
        for pairs, sample in ((greedy, False), (sampled, True)):
            for start in range(0, len(pairs), batch_size):
                scheduled = [
                    ScheduledRound(round_id=next_id + offset, window=-1, state=state, sample_index=index)
                    for offset, (state, index) in enumerate(pairs[start : start + batch_size])
                ]
                next_id += len(scheduled)
                seed = derived_seed(self.config.seed, f"{purpose}:{'sampled' if sample else 'greedy'}", start)
                yield scheduled, self.round_settings(phase="eval", sample=sample, seed=seed)

    def _evaluation_completed(
        self, protocol: Protocol, rounds: list[RoundPlayed], checkpoint: str | None, dataset_name: str | None,
        answers_per_state: int,
    ) -> EvaluationCompleted:
        # The constraint is the monitor's: only the monitored protocol has f.
        delta = self.config.lagrangian.delta if protocol == "monitored" else None
        metrics = window_metrics(rounds, delta)
        completed = EvaluationCompleted(
            dataset=dataset_name or self.dataset.name,
            split="eval",
            n_rounds=len(rounds),
            policy_version=self.progress.policy_version,
            monitor_version=self.progress.monitor_version,
            checkpoint=checkpoint,
            # Undefined metrics (None: e.g. no wrong answers, or no monitor) are left out so
            # that every value is a float; each rate's n lives in `counts`.
            metrics={name: float(value) for name, value in metrics.items()
                     if value is not None and not name.endswith("_n")
                     and (self.minmax or name != "last_lambda")},  # rlhf has no λ, not a λ of 0
            protocol=protocol,
            samples_per_state=answers_per_state,
            counts={name: [hits, eligible] for name, (hits, eligible) in window_counts(rounds).items()},
        )
        self.log.append(completed)
        return completed

    # --- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self) -> CheckpointSaved:
        # A checkpoint directory is never overwritten: a resumed run names its own apart,
        # because a killed run may have left one for the same version without logging it.
        relative = Path(CHECKPOINTS_DIR) / f"{self.progress.policy_version}{self.checkpoint_suffix}"
        progress = {**asdict(self.progress), "policy_first_seq": None}
        _test_moment("checkpoint-writing")
        save_checkpoint(
            self.run_dir / relative,
            self.players(),
            self.learners(),
            self.dual if self.minmax else None,
            extra={"progress": progress},
        )
        _test_moment("checkpoint-renamed")  # complete on disk, not yet in the log
        saved = CheckpointSaved(
            path=str(relative),
            policy_version=self.progress.policy_version,
            monitor_version=self.progress.monitor_version,
            lambda_value=self.dual.value if self.minmax else 0.0,
            next_round_id=self.progress.next_round_id,
            last_round_seq=self.progress.last_trained_seq,
        )
        self.log.append(saved)
        self.log.flush()  # only now is it a checkpoint: resume reads CheckpointSaved, not the directory
        _test_moment("checkpoint-logged")
        return saved

    def restore_checkpoint(self, saved: CheckpointSaved) -> None:
        """Adapters, optimiser states, λ, RNG states and the loop's position, as saved."""
        extra = load_checkpoint(
            self.run_dir / saved.path, self.players(), self.learners(), self.dual if self.minmax else None
        )
        self.progress = Progress(**extra["progress"])
        self.publish_adapters()

    def release_actors(self) -> None:
        """End the Ray actors of a run played through them (nothing to do for a local run)."""
        if self.actors is not None:
            self.actors.close()
            self.actors = None

    def players(self) -> dict[str, Player]:
        players = {"policy": self.table.policy}
        if self.table.monitor is not None:
            players["monitor"] = self.table.monitor
        return players

    def learners(self) -> dict[str, PPOLearner]:
        learners = {"policy": self.policy_learner}
        if self.monitor_learner is not None:
            learners["monitor"] = self.monitor_learner
        return learners


def _plain_floats(diagnostics: dict[str, float]) -> dict[str, float]:
    return {name: float(value) for name, value in diagnostics.items()}


def _mismatch_fields(learner: PPOLearner | None) -> dict[str, Any]:
    """The off-policy mismatch of the learner's last update, as the update event records it."""
    assert learner is not None and learner.mismatch is not None
    mismatch = learner.mismatch
    return {
        "logprob_mismatch_mean": mismatch.mean,
        "logprob_mismatch_max": mismatch.max,
        "round_logprob_mismatch": mismatch.per_rollout,
    }


# ---------------------------------------------------------------------------------------
# Entry points: a new run, a resumed run, an evaluation of a saved run
# ---------------------------------------------------------------------------------------


def new_run_id(config: RunConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{stamp}-{config.mode}-{random.SystemRandom().randrange(16**4):04x}"


def open_run(config: RunConfig, run_dir: Path, *, pool: ModelPool | None = None, announce: Announce | None = None) -> Game:
    """Check every input, load the models, cut the stories, create `run_dir`'s log and record
    RunStarted. What a user can get wrong (the dataset, the models' presence, the run
    directory) fails before any model loads; the directory is created, and `announce`d, only
    once the models are loaded, so a failure never leaves or names a run that does not exist."""
    pool = pool or ModelPool()
    dataset = read_dataset(config.data)  # no tokenizer needed: stories are cut further down
    for spec in sorted(set(_models_in_play(config))):
        pool.check_available(spec)
    _check_run_dir_can_be_created(run_dir)
    _connect_cluster(config)
    seed_everything(config.seed)
    table = set_table(config, pool)
    config, dataset = _fit_stories(config, dataset, table, announce)
    writer = RunWriter.create(run_dir, run_dir.name)
    if announce is not None:
        announce(f"run {run_dir.name} in {run_dir}")
    log = RunLog(run_dir, writer, open_trackers(config.logging.backends, run_dir, writer.run_id))
    try:
        game = Game(config, table, dataset, log, run_dir, pool=pool)
    except BaseException:
        log.close()  # e.g. a Ray actor that could not start: the run's lock is released
        raise
    try:
        _record_start(game, dataset)
    except BaseException:
        game.release_actors()
        raise
    return game


def _record_start(game: Game, dataset: Dataset) -> None:
    """RunStarted and the judge's calibration, flushed."""
    config, log, table = game.config, game.log, game.table
    log.append(
        RunStarted(
            mode=config.mode,
            config=config.resolved(),
            seeds={"seed": config.seed, "split_seed": config.data.split_seed},
            package_versions=package_versions(),
            data_fingerprint=dataset.fingerprint,
            dataset_name=dataset.name,
            n_train_states=len(dataset.train),
            n_eval_states=len(dataset.eval),
            num_threads=torch.get_num_threads(),
            cpu_linear=game.cpu_linear,
        )
    )
    log.append(calibrate_judge(config, table.judge, dataset))
    log.flush()


def calibrate_judge(config: RunConfig, judge: Judge, dataset: Dataset) -> JudgeCalibrated:
    """The judge's calibration at run start, from the first train states (referees/calibration.py)."""
    calibration = NO_CALIBRATION
    if config.judge.calibration == "contextual":
        states = dataset.train
        calibration = contextual_calibration(
            judge,
            [state.story for state in states],
            [state.question for state in states],
            [list(state.choices) for state in states],
            [state.state_id for state in states],
        )
    judge.calibration_offset = calibration.offset
    return JudgeCalibrated(**asdict(calibration))


def restore_calibration(events: Sequence[Recorded], judge: Judge) -> None:
    """The offset the run logged, never recomputed: a resumed or evaluated run judges as it did.
    Logs older than JudgeCalibrated were judged uncalibrated (offset 0)."""
    logged = [item.event for item in events if isinstance(item.event, JudgeCalibrated)]
    judge.calibration_offset = logged[0].offset if logged else 0.0


def _models_in_play(config: RunConfig) -> list[str]:
    players = [config.policy.model] + ([config.monitor.model] if config.mode == "minmax" else [])
    return players + [config.reward.model, config.judge.model]


def _connect_cluster(config: RunConfig) -> None:
    """With [cluster] backend = "ray": Ray installed and its cluster reachable, before any model loads."""
    if config.cluster.backend == "ray":
        from engine.cluster import connect

        connect(config.cluster)


def _check_run_dir_can_be_created(run_dir: Path) -> None:
    """A run directory that cannot be made fails now, not after the models have loaded."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{run_dir}: cannot be created, {existing} is a file; point run_dir (--run-dir) at a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{run_dir}: cannot be created, {existing} is not writable; point run_dir (--run-dir) elsewhere")


def _fit_stories(config: RunConfig, dataset: Dataset, table: Table, announce: Announce | None) -> tuple[RunConfig, Dataset]:
    """Cut stories to data.max_story_tokens, or when unset to what the models' contexts leave
    (recorded in the config, so a resume cuts the same); the count is announced once."""
    limit = config.data.max_story_tokens
    budget = None
    if limit is None:
        budget = story_budget(table, config, dataset.states)
        if budget is None:
            return config, dataset  # no model states its context length: stories stay whole
        limit = budget.tokens
        config = config.model_copy(update={"data": config.data.model_copy(update={"max_story_tokens": limit})})
    dataset, n_cut = fit_stories(dataset, limit, table.policy.tokenizer)
    if n_cut and announce is not None:
        n_stories = len({state.story for state in dataset.states})
        origin = (f"what the {budget.role} model's {budget.context}-token context leaves after prompt and generation"
                  if budget is not None else "data.max_story_tokens")
        announce(f"{n_cut} of {n_stories} stories cut to {limit} tokens ({origin})")
    return config, dataset


def start_run(
    config: RunConfig, run_dir: Path, *, eval_only: bool = False, pool: ModelPool | None = None, announce: Announce | None = None
) -> RunFinished:
    """A new run: play the whole schedule (or only evaluate) and finish it."""
    game = open_run(config, run_dir, pool=pool, announce=announce)
    try:
        with _failures_recorded(game.log):
            if eval_only:
                game.evaluate(checkpoint=None)
                return _finish_without_training(game)
            # Checkpoint 0 (initial adapters, optimisers, RNG states): a run killed in its first
            # window resumes from here instead of having to start again.
            game.save_checkpoint()
            return game.train()
    finally:
        game.release_actors()


def resume_run(run_dir: Path, *, pool: ModelPool | None = None) -> RunFinished:
    """Continue a run from its last checkpoint (see the module docstring for what is redone)."""
    reader = RunReader(run_dir)
    config = config_to_resume(reader.run_started().config, str(run_dir))
    # The lock first: a run another process is writing is refused before any model loads.
    writer = RunWriter.open_existing(run_dir)
    try:
        events = reader.events(include_superseded=True)  # round ids stay unique across every round ever logged
        finished = [item.seq for item in events if isinstance(item.event, RunFinished)]
        if finished:
            # Whatever followed (a later `eval`): the run's training is over for good.
            raise UserError(f"{run_dir}: the run already finished (RunFinished at seq {finished[-1]}); start a new run, "
                            "or evaluate it with `minmax-engine eval`")
        checkpoints = [item for item in events if isinstance(item.event, CheckpointSaved)]
        if not checkpoints:
            raise UserError(f"{run_dir}: no checkpoint to resume from (it stopped before checkpoint 0 "
                            "was logged); start a new run")
        _remove_partial_checkpoints(run_dir)
        _use_recorded_threads(reader.run_started(), run_dir)
        dataset = read_dataset(config.data)  # a missing or unreadable file fails before any model loads
        _connect_cluster(config)
        seed_everything(config.seed)
        pool = pool or ModelPool(cpu_linear=_recorded_cpu_linear(reader.run_started(), run_dir))
        table = set_table(config, pool)
        if config.data.max_story_tokens is not None:  # the budget the run recorded, cut as it was
            dataset, _cut = fit_stories(dataset, config.data.max_story_tokens, table.policy.tokenizer)
        _check_same_data(reader, dataset, run_dir)
    except BaseException:
        writer.close()
        raise
    checkpoint = checkpoints[-1]
    train_ids = [item.event.round_id for item in events if isinstance(item.event, RoundPlayed) and item.event.phase == "train"]
    eval_ids = [item.event.round_id for item in events if isinstance(item.event, RoundPlayed) and item.event.phase == "eval"]
    log = RunLog(run_dir, writer, open_trackers(config.logging.backends, run_dir, writer.run_id))
    log.trackers.resume(reader.run_started())
    try:
        game = Game(config, table, dataset, log, run_dir, pool=pool)
    except BaseException:
        log.close()
        raise
    restore_calibration(events, table.judge)
    voided = superseded_seqs(events)
    game.lambda_history = [item.event for item in events if isinstance(item.event, LambdaUpdated)
                           and item.seq <= checkpoint.seq and item.seq not in voided]
    try:
        with _failures_recorded(log):
            assert isinstance(checkpoint.event, CheckpointSaved)
            game.restore_checkpoint(checkpoint.event)  # also restores the RNG states
            game.checkpoint_suffix = f"-resumed{writer.next_seq}"  # the seq RunResumed gets
            game.progress.next_round_id = max(train_ids, default=-1) + 1
            game.progress.next_eval_round_id = max(eval_ids, default=-1) + 1
            log.append(
                RunResumed(
                    checkpoint_seq=checkpoint.seq,
                    next_round_id=game.progress.next_round_id,
                    discarded_after_seq=checkpoint.seq,
                    rounds_played=game.progress.position,
                )
            )
            log.flush()
            return game.train()
    finally:
        game.release_actors()


def config_to_resume(recorded: dict[str, Any], run: str) -> RunConfig:
    """The recorded config, as the run played it: logs older than `training.policy_generation_rows`
    drew the policy's answers a window at a time, and logs older than `training.reference_cache_mib`
    encoded the reference's prompts afresh each update, so they resume doing so."""
    config = recorded_config(recorded, run)
    recorded_training = recorded.get("training", {})
    older: dict[str, Any] = {}
    if "policy_generation_rows" not in recorded_training:
        older["policy_generation_rows"] = config.training.window_size
    if "reference_cache_mib" not in recorded_training:
        older["reference_cache_mib"] = 0
    if older:
        config = config.model_copy(update={"training": config.training.model_copy(update=older)})
    return config


def _remove_partial_checkpoints(run_dir: Path) -> None:
    """Directories a killed or failed save left under a temporary name: never complete, never read."""
    checkpoints = run_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        for partial in checkpoints.glob(f"*{PARTIAL_SUFFIX}"):
            shutil.rmtree(partial, ignore_errors=True)


def _recorded_cpu_linear(run_started: RunStarted, run_dir: Path) -> str:
    """The CPU linear kernel to resume with: the one the run started with (BLAS for logs older
    than the record, which all used it), unless MINMAX_ENGINE_CPU_LINEAR names another (then
    with a warning: the resumed run may differ in the last bits from an uninterrupted one)."""
    recorded = run_started.cpu_linear or "blas"
    if os.environ.get(CPU_LINEAR_ENVIRONMENT_VARIABLE, "").strip():
        asked = cpu_linear_choice()
        if asked != recorded:
            print(f"minmax-engine: warning: {run_dir} was played with the {recorded!r} CPU linear kernel; resuming with "
                  f"{asked!r} as {CPU_LINEAR_ENVIRONMENT_VARIABLE} asks, so the resumed run may differ in the last bits "
                  "from an uninterrupted one", file=sys.stderr, flush=True)
        return asked
    return recorded


def _use_recorded_threads(run_started: RunStarted, run_dir: Path) -> None:
    """Resume with the thread count the run started with: CPU kernels split their sums by
    thread, so another count changes the last bits of log-probs and updates.

    MINMAX_ENGINE_THREADS, when set, wins (with a warning): a run started with 2 threads and
    resumed beside another run on a 2-core machine would otherwise oversubscribe it, and
    OpenMP threads waiting at barriers made such runs several times slower (measured
    2026-12-03: two resumed science runs at 2 threads each took 11.7 s per evaluation answer,
    one thread each about 1.5 s). OMP_NUM_THREADS, often set machine-wide, does not override."""
    recorded, current = run_started.num_threads, torch.get_num_threads()
    if recorded is None or recorded == current:
        return
    if os.environ.get(THREADS_ENVIRONMENT_VARIABLE, "").strip():
        print(f"minmax-engine: warning: {run_dir} was played with {recorded} threads; resuming with {current} "
              f"as {THREADS_ENVIRONMENT_VARIABLE} asks, so the resumed run may differ in the last bits from an "
              "uninterrupted one", file=sys.stderr, flush=True)
        return
    torch.set_num_threads(recorded)
    if torch.get_num_threads() != recorded:
        print(f"minmax-engine: warning: {run_dir} was played with {recorded} threads, this process runs "
              f"{torch.get_num_threads()}; the resumed run may differ in the last bits from an uninterrupted one",
              file=sys.stderr, flush=True)


def evaluate_run(
    run_dir: Path, *, dataset: str | None = None, checkpoint: int | None = None, pool: ModelPool | None = None
) -> list[EvaluationCompleted]:
    """Evaluate a run's saved adapters on held-out states and append the result to its log:
    the protocols of `Game.evaluate` (deployment, then monitored in minmax mode)."""
    reader = RunReader(run_dir)
    config = recorded_config(reader.run_started().config, str(run_dir))
    if dataset is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"dataset": dataset})})
    events = reader.events(include_superseded=True)  # eval round ids stay unique across the whole log
    saved = [item.event for item in events if isinstance(item.event, CheckpointSaved)]
    if checkpoint is not None:
        versions = sorted({event.policy_version for event in saved})
        saved = [event for event in saved if event.policy_version == checkpoint]
        if not saved:
            raise UserError(f"{run_dir}: --checkpoint {checkpoint}: no such checkpoint; the run saved {versions or 'none'}")
    eval_ids = [item.event.round_id for item in events if isinstance(item.event, RoundPlayed) and item.event.phase == "eval"]

    data = read_dataset(config.data)  # a bad --dataset fails before the lock and the models
    _connect_cluster(config)
    writer = RunWriter.open_existing(run_dir)  # fails fast if another process is writing the run
    log = RunLog(run_dir, writer, open_trackers([], run_dir, writer.run_id))
    game = None
    try:
        pool = pool or ModelPool()
        table = set_table(config, pool)
        if config.data.max_story_tokens is not None:
            data, _cut = fit_stories(data, config.data.max_story_tokens, table.policy.tokenizer)
        restore_calibration(events, table.judge)
        game = Game(config, table, data, log, run_dir, pool=pool)
        checkpoint_path = None
        if saved:
            assert isinstance(saved[-1], CheckpointSaved)
            game.restore_checkpoint(saved[-1])
            checkpoint_path = saved[-1].path
        game.progress.next_eval_round_id = max(eval_ids, default=-1) + 1
        return game.evaluate(checkpoint=checkpoint_path)
    finally:
        if game is not None:
            game.release_actors()
        log.close()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES_RECORDED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _check_same_data(reader: RunReader, dataset: Dataset, run_dir: Path) -> None:
    recorded = reader.run_started().data_fingerprint
    if recorded != dataset.fingerprint:
        raise UserError(
            f"{run_dir}: the dataset {dataset.name!r} changed since the run started (fingerprint differs); "
            "restore the original file to resume"
        )


def _finish_without_training(game: Game) -> RunFinished:
    finished = RunFinished(rounds=0, policy_updates=0, monitor_updates=0, wall_seconds=time.perf_counter() - game.started)
    game.log.append(finished)
    game.log.flush()
    return finished


class _failures_recorded:  # noqa: N801 - used as a `with` statement, reads as a phrase
    """Any exception inside: RunFailed is appended and flushed, then the exception goes on.
    The log and the trackers are closed on the way out either way.

    Ctrl-C is recorded the same way (error_type "KeyboardInterrupt"); the run resumes like a
    killed one. When the log cannot take RunFailed either (a full disk), nothing claims it
    was recorded: a user error says so on its one line, and the run shows as stopped."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: object) -> bool:
        if exc is None:
            self.log.close()
            return False
        if isinstance(exc, KeyboardInterrupt):
            failed = RunFailed(error_type="KeyboardInterrupt", message="interrupted (Ctrl-C)")
        else:
            failed = RunFailed(error_type=type(exc).__name__, message=str(exc) or type(exc).__name__)
        try:
            try:
                self.log.append(failed)  # raises first when an earlier background flush failed
            finally:
                self.log.close()
        except UserError as not_logged:
            if isinstance(exc, UserError):
                raise UserError(f"{exc} (not recorded in the log, which cannot be written either)") from None
            print(f"minmax-engine: the failure below is not recorded in the log: {not_logged}",
                  file=sys.stderr, flush=True)
        return False
