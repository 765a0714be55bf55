"""Ray wiring: a run's roles played in Ray actors, and a sweep's runs dispatched as Ray tasks.

    [cluster]
    backend = "ray"          # minmax-engine play --config FILE: the roles play in actors
    address = "auto"         # none: a local Ray instance; "auto" / "HOST:PORT" / "ray://HOST:PORT"

Every other module is unaware of Ray; this one imports it only when a run or sweep asks for it
(`pip install -e '.[ray]'`), so `play` with the default backend never needs it.

Roles as actors. The [devices] map becomes a placement group: one bundle per device the map
names (a GPU each, or one CPU bundle), and one actor (a *seat*) per bundle, holding the roles
placed on that device, loaded as `set_table` loads them (roles naming one base share it, as
they do in one process). The driver keeps its own players for the learners, writes the run's
log, and reads the learners' windows back from it as a local run does; its players render and
encode prompts and generate through `ActorBackend`, a rollout backend (players/backend.py)
whose sampling runs in the seats, and its rounds are scored through `SeatedReward` and
`SeatedJudge`. After every learner update (and on a restore) the game publishes the player's
new adapter to its backend, which sends the tensors to the seat. A seat runs with the driver's intra-op thread
count, so fp32 sums split the same way and a Ray run logs what a local run logs
(tests/test_cluster.py). A seat that dies (its node lost, or `ray.kill`) fails the run
cleanly: RunFailed is logged, and `play --resume` continues from the last checkpoint.

Runs as tasks. `sweep` and `compare` hand each run to `play_in_tasks`: one Ray task per run,
asking for `num_cpus` = its thread count (and [cluster] gpus_per_run GPUs), at most
`parallel` at a time. A task plays its run in its own process with the roles local (a run
inside a sweep task does not start actors of its own), writing its own run directory, which
on a cluster must be on a filesystem every node shares.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.config import ROLES, ClusterConfig, RunConfig, Role
from engine.devices import Placement
from storage.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.round import Table
    from players.backend import SampledTokens, SamplingSettings

INSTALL_HINT = "pip install -e '.[ray]'"
PLACEMENT_TIMEOUT_SECONDS = 120.0


def import_ray() -> Any:
    """Ray, or a one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise UserError(f'[cluster] backend = "ray" needs Ray, which is not installed: {INSTALL_HINT}') from None
    return ray


def connect(cluster: ClusterConfig) -> Any:
    """Join the configured Ray cluster, or start a local instance; a process already connected stays so."""
    ray = import_ray()
    if not ray.is_initialized():
        if cluster.address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=cluster.address, log_to_driver=False)
            except ConnectionError as error:
                raise UserError(f"[cluster] address = {cluster.address!r}: no Ray cluster answers there ({error}); "
                                "start one with `ray start --head` or fix the address") from None
    return ray


# ---------------------------------------------------------------------------------------
# Roles as actors
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeatPlan:
    """One actor: the roles placed on one device, and what it asks Ray for."""

    roles: tuple[Role, ...]
    device_type: str  # "cpu", "cuda" or "mps": inside the actor, its one GPU is cuda:0
    dtype: torch.dtype
    resources: dict[str, float]  # its placement-group bundle


def plan_seats(placements: dict[Role, Placement], roles: Sequence[Role], threads: int) -> list[SeatPlan]:
    """One seat per device the placements name (in role order): a GPU each, shared by the roles
    placed on it; every CPU role in one seat with `threads` CPUs."""
    by_device: dict[str, list[Role]] = {}
    for role in roles:
        by_device.setdefault(str(placements[role].device), []).append(role)
    seats = []
    for device, seated in by_device.items():
        device_type = torch.device(device).type
        resources = {"CPU": float(threads)} if device_type != "cuda" else {"CPU": 1.0, "GPU": 1.0}
        seats.append(SeatPlan(tuple(seated), device_type, placements[seated[0]].dtype, resources))
    return seats


class Seat:
    """The actor's body (wrapped with ray.remote by `seat_roles`): its roles' models, loaded
    from the run's config as the driver loads them, answering generation and scoring calls."""

    def __init__(self, config: dict[str, Any], roles: Sequence[str], device_type: str, dtype: torch.dtype,
                 threads: int, cache_dir: str, cpu_linear: str | None = None) -> None:
        from players import ModelPool, Player
        from players.backend import TransformersBackend
        from referees import Judge, RewardModel

        torch.set_num_threads(threads)  # the driver's count: fp32 sums split the same way
        run_config = RunConfig.model_validate(config)
        pool = ModelPool(cache_dir=cache_dir, cpu_linear=cpu_linear)  # the driver's kernel, as threads
        device = "cuda:0" if device_type == "cuda" else device_type  # Ray shows the actor its one GPU
        players: dict[str, Player] = {}
        self.reward: Any = None
        self.judge: Any = None
        for role in roles:
            if role in ("policy", "monitor"):
                players[role] = Player.create(pool, role=role, config=getattr(run_config, role), device=device, dtype=dtype)
            elif role == "reward":
                self.reward = RewardModel.create(pool, run_config.reward, device=device, dtype=dtype)
            else:
                self.judge = Judge.create(pool, run_config.judge, device=device, dtype=dtype)
        # The in-process sampling loop over the seat's own copies (fresh adapters until the
        # driver publishes its players' ones)
        self.backend = TransformersBackend(players)

    def whereabouts(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def load_adapter(self, role: str, state: dict[str, torch.Tensor], version: int) -> None:
        self.backend.load_adapter(role, state, version)

    def generate(self, role: str, prompt_ids: list[list[int]], sampling: SamplingSettings,
                 seed: int | None) -> list[SampledTokens]:
        return self.backend.generate(role, prompt_ids, sampling, seed)

    def score(self, questions: list[str], choices: list[list[str]], texts: list[str]) -> list[float]:
        return self.reward.score(questions, choices, texts)

    def p_accept_of(self, prompts: list[str], answers: list[str], calibration_offset: float) -> list[float]:
        self.judge.calibration_offset = calibration_offset  # the driver's, logged in JudgeCalibrated
        return self.judge.p_accept_of(prompts, answers)


class RoleActors:
    """The run's seats and their placement group; `table` plays rounds through them (the
    driver's players, generating through the seats, and the seated referees)."""

    def __init__(self, ray: Any, plans: list[SeatPlan], handles: list[Any], placement_group: Any,
                 local: Table, run_name: str) -> None:
        from engine.round import Table

        self.ray, self.plans, self.handles, self.placement_group = ray, plans, handles, placement_group
        self.run_name = run_name
        self.local = local
        self.starting = True  # until every seat has loaded its models
        self.seat_of = {role: handle for plan, handle in zip(plans, handles) for role in plan.roles}
        self.roles_of = {id(handle): plan.roles for plan, handle in zip(plans, handles)}
        backend = ActorBackend(self)
        for player in (local.policy, local.monitor):
            if player is not None:
                player.use_backend(backend)
        self.table = Table(
            policy=local.policy,
            monitor=local.monitor,
            reward=SeatedReward(self),  # type: ignore[arg-type]  # scores like a RewardModel
            judge=SeatedJudge(local.judge, self),  # type: ignore[arg-type]  # judges like a Judge
        )

    def call(self, role: Role, method: str, *args: Any) -> Any:
        """One call to the seat holding `role`."""
        return self._call(self.seat_of[role], method, *args)

    def _call(self, handle: Any, method: str, *args: Any) -> Any:
        """A seat's answer; a dead seat (its node lost, or killed) fails the run with what to do next."""
        try:
            return self.ray.get(getattr(handle, method).remote(*args))
        except self.ray.exceptions.RayActorError as error:
            roles = ", ".join(self.roles_of[id(handle)])
            cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if self.starting:
                raise UserError(f"the Ray actor for {roles} died while loading its models ({cause}); "
                                "check that node (memory, the model paths), then run the command again") from None
            raise UserError(f"the Ray actor playing {roles} died ({cause}); the run stopped: "
                            f"continue it with `minmax-engine play --resume {self.run_name}`") from None

    def whereabouts(self) -> list[tuple[str, int]]:
        return [self._call(handle, "whereabouts") for handle in self.handles]

    def close(self) -> None:
        """End the seats and free their placement group (a run's actors never outlive it); the
        driver's players generate in process again."""
        from players.backend import TransformersBackend

        for player in (self.local.policy, self.local.monitor):
            if player is not None:
                player.use_backend(TransformersBackend({player.role: player}))
        for handle in self.handles:
            self.ray.kill(handle)
        self.ray.util.remove_placement_group(self.placement_group)


class ActorBackend:
    """The rollout backend (players/backend.py) of a run on Ray: sampling runs in the seat that
    holds the role, on the adapter the driver last published to it."""

    def __init__(self, actors: RoleActors) -> None:
        self.actors = actors

    def generate(self, role: str, prompt_ids: Sequence[list[int]], sampling: SamplingSettings,
                 seed: int | None) -> list[SampledTokens]:
        return self.actors.call(role, "generate", role, [list(ids) for ids in prompt_ids], sampling, seed)  # type: ignore[arg-type]

    def load_adapter(self, role: str, state: Mapping[str, torch.Tensor], version: int) -> None:
        self.actors.call(role, "load_adapter", role, dict(state), version)  # type: ignore[arg-type]


class SeatedReward:
    """The reward model's scores, computed in its seat."""

    def __init__(self, actors: RoleActors) -> None:
        self.actors = actors

    def score(self, questions: Sequence[str], choices: Sequence[Sequence[str]], texts: Sequence[str]) -> list[float]:
        return self.actors.call("reward", "score", list(questions), [list(c) for c in choices], list(texts))


class SeatedJudge:
    """The judge: its input texts are made here (the driver's judge), its forward pass runs in
    its seat with the calibration offset the driver holds (set at run start or on resume)."""

    def __init__(self, judge: Any, actors: RoleActors) -> None:
        self.judge, self.actors = judge, actors

    def prompts(self, stories: Sequence[str], questions: Sequence[str], choices: Sequence[Sequence[str]],
                answers: Sequence[str], critiques: Sequence[str] | None) -> list[str]:
        return self.judge.prompts(stories, questions, choices, answers, critiques)

    def p_accept_of(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        return self.actors.call("judge", "p_accept_of", list(prompts), list(answers), self.judge.calibration_offset)


def seat_roles(config: RunConfig, local: Table, cache_dir: Path, run_name: str, cpu_linear: str | None = None) -> RoleActors:
    """Start the run's seats on the configured Ray cluster; the driver's players generate
    through them from now on (the game publishes its adapters to them next)."""
    from engine.devices import resolve_placements

    ray = connect(config.cluster)
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    roles: list[Role] = [role for role in ROLES if role != "monitor" or config.mode == "minmax"]
    models: dict[Role, str] = {
        "policy": config.policy.model,
        "monitor": config.monitor.model if config.mode == "minmax" else config.policy.model,
        "reward": config.reward.model,
        "judge": config.judge.model,
    }
    # "auto" spreads over the GPUs of the whole cluster, not the driver's
    placements = resolve_placements(config.devices, models, gpu_count=int(ray.cluster_resources().get("GPU", 0)))
    threads = torch.get_num_threads()
    plans = plan_seats(placements, roles, threads)
    group = ray.util.placement_group([plan.resources for plan in plans], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_SECONDS)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(group)
        wanted = [plan.resources for plan in plans]
        raise UserError(f"[devices] asks Ray for {wanted} (one bundle per device), which the cluster "
                        f"({ray.cluster_resources()}) could not place within {PLACEMENT_TIMEOUT_SECONDS:.0f} s; "
                        "place roles on fewer devices or add nodes") from None
    remote_seat = ray.remote(Seat)
    handles = []
    for index, plan in enumerate(plans):
        handles.append(
            remote_seat.options(
                num_cpus=plan.resources["CPU"],
                num_gpus=plan.resources.get("GPU", 0.0),
                name=f"{run_name}:{'+'.join(plan.roles)}",
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index),
            ).remote(config.resolved(), list(plan.roles), plan.device_type, plan.dtype, threads, str(cache_dir), cpu_linear)
        )
    actors = RoleActors(ray, plans, handles, group, local, run_name)
    try:
        actors.whereabouts()  # every seat has loaded its models
        actors.starting = False
    except BaseException:
        actors.close()
        raise
    return actors


# ---------------------------------------------------------------------------------------
# Runs as tasks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTask:
    """One run for a task: its config (roles local), its directory, and whether to resume it."""

    name: str
    config: RunConfig
    run_dir: Path
    resume: bool


def _play_run(config: dict[str, Any], run_dir: str, resume: bool, threads: int) -> str:
    """The task body: play (or resume) one run in this worker process."""
    from engine import game

    torch.set_num_threads(threads)
    if resume:
        game.resume_run(Path(run_dir))
    else:
        game.start_run(RunConfig.model_validate(config), Path(run_dir))
    return run_dir


def play_in_tasks(
    tasks: Sequence[RunTask], cluster: ClusterConfig, *, parallel: int, threads: int,
    on_start: Callable[[RunTask], None], on_wait: Callable[[], None],
    on_done: Callable[[RunTask, BaseException | None], None],
) -> None:
    """Each run as one Ray task (num_cpus = threads), at most `parallel` in flight; `on_start`
    is called as a run is submitted, `on_wait` between polls, `on_done` once per run with the
    error that ended it, if any."""
    ray = connect(cluster)
    cpus = ray.cluster_resources().get("CPU", 0)
    if threads > cpus:  # Ray would wait for such a node for ever
        raise UserError(f"each run asks Ray for {threads} CPUs (its threads) but the cluster has {cpus:g}; "
                        f"set MINMAX_ENGINE_THREADS to {int(cpus) or 1} or fewer, or add nodes")
    remote_run = ray.remote(_play_run).options(num_cpus=threads, num_gpus=cluster.gpus_per_run, max_retries=0)
    waiting = list(tasks)
    in_flight: dict[Any, RunTask] = {}
    while waiting or in_flight:
        while waiting and len(in_flight) < parallel:
            task = waiting.pop(0)
            on_start(task)
            local_roles = task.config.model_copy(update={"cluster": ClusterConfig()})
            in_flight[remote_run.remote(local_roles.resolved(), str(task.run_dir), task.resume, threads)] = task
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=2.0)
        on_wait()
        for reference in ready:
            task = in_flight.pop(reference)
            try:
                ray.get(reference)
            except ray.exceptions.RayError as error:
                on_done(task, error)
            else:
                on_done(task, None)
