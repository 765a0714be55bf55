"""The run config: one typed, validated, frozen object for everything a run needs.

    config, warnings = load_config(Path("configs/tiny.toml"), ConfigOverrides(num_epochs=1))

A config file is TOML or JSON with the tables of docs/ARCHITECTURE.md ([policy], [monitor],
[reward], [judge], [data], [game], [training], [lagrangian], [devices], [logging], [cluster]). The
older JSON layout `{policy_model, monitor_model, reward_model, judge_model, training,
logging}` is translated first (users arrive with such files). Command-line overrides apply
before validation, so they are validated like everything else. Unknown keys, wrong types
and impossible values raise UserError naming the file, the key path and what to set.

`config.resolved()` (every default filled in) is what RunStarted records; readers of a run
get it back, validated, from `recorded_config`. These models are the only place a setting's
default and range live (the engine's internal settings are built from them), and every field
carries a one-line description: docs/config.md is generated from them
(`python -m engine.config_docs > docs/config.md`; a test fails when it is stale).

Why one file over 500 lines: every table of a run config is declared here, beside the legacy
translation and the loader, so a reader sees each setting's default, range and description in
one place (the one-default-one-place rule); the player and referee tables live with their
packages.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from engine.data import DataConfig
from engine.payoffs import lowest_reachable_penalty
from players.config import CONFIG_MODEL, PlayerConfig
from referees.config import JudgeConfig, RewardConfig
from storage.errors import UserError

Mode = Literal["minmax", "rlhf"]
Role = Literal["policy", "monitor", "reward", "judge"]
ROLES: tuple[Role, ...] = ("policy", "monitor", "reward", "judge")

class GameConfig(BaseModel):
    """[game]: the payoffs of GAME.md §2."""

    model_config = CONFIG_MODEL

    w_reward: float = Field(default=1.0, ge=0.0, description="Weight of norm(r(O)) in R.")
    w_judge: float = Field(default=1.0, ge=0.0, description="Weight of s_judge = 2·p_accept − 1 in R.")
    alpha: float = Field(default=0.7, ge=0.0, le=1.0, description="Weight of the verdict term in f.")
    unparsed_penalty: float = Field(
        default=1.0, ge=0.0, description="Subtracted from a player's reward when its output does not parse."
    )
    reward_norm: Literal["tanh", "none"] = Field(default="tanh", description="norm() applied to r(O) in R.")


class TrainingConfig(BaseModel):
    """[training]: TTUR PPO (GAME.md §3). Learning rates, k, B, epochs and minibatches are separate knobs."""

    model_config = CONFIG_MODEL

    # --- two-timescale schedule ---
    policy_learning_rate: float = Field(
        default=1e-6, gt=0.0, le=1.0, description="AdamW learning rate of the policy's LoRA adapter (the slow player)."
    )
    monitor_learning_rate: float = Field(
        default=4e-6, gt=0.0, le=1.0, description="AdamW learning rate of the monitor's LoRA adapter (the fast player)."
    )
    monitor_updates_per_policy: int = Field(default=5, ge=1, description="k: monitor updates per policy update.")
    window_size: int = Field(default=16, ge=1, description="B: fresh rounds per window (one monitor update).")
    num_epochs: int = Field(default=10, ge=1, description="Passes over the train split.")
    samples_per_state: int = Field(default=1, ge=1, description="n samples per state (group advantages).")
    policy_generation_rows: int | None = Field(
        default=None, ge=1,
        description="Training answers the policy generates together. It does not change between its updates, "
        "so a policy period's k windows are drawn when its first window is played, this many rows at a "
        "time, each chunk seeded by its first round's position. None: the whole period (k·B rows) at once "
        "(a decode step costs little more for more rows); window_size: one window at a time, less memory "
        "for long stories on a GPU.",
    )
    reference_cache_mib: int | None = Field(
        default=None, ge=0,
        description="MiB of prompt keys and values the KL reference (the frozen base) keeps between updates, "
        "shared by the learners on one base: a run meets the same states every epoch, and the reference "
        "pass is mostly prompt. Prompts are encoded in fixed chunks so that a found chunk equals a recomputed "
        "one to the last bit (resume stays exact). 0: off (prompts encoded afresh, grouped by shared prefix); "
        "None: 1024 on a CPU base, off on a GPU (not measured there).",
    )
    # --- PPO ---
    ppo_epochs: int = Field(default=2, ge=1, description="Passes over an update's rollouts.")
    minibatch_size: int = Field(default=8, ge=1, description="Rollouts per optimiser step.")
    clip_range: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="ε: probability ratios outside [1 − ε, 1 + ε] stop pulling."
    )
    kl_coef_policy: float = Field(
        default=0.05, ge=0.0, description="β_L: weight of the policy's per-token KL penalty (k2) to its reference, in the loss."
    )
    kl_coef_monitor: float = Field(
        default=0.05, ge=0.0, description="β_M: weight of the monitor's per-token KL penalty (k2) to its reference, in the loss."
    )
    advantage: Literal["whiten", "group", "gae"] = Field(
        default="whiten",
        description='Advantage estimator: whitened rewards, group-relative ("group", needs samples_per_state >= 2) or GAE.',
    )
    gamma: float = Field(default=1.0, ge=0.0, le=1.0, description="GAE discount per token.")
    gae_lambda: float = Field(
        default=0.95, ge=0.0, le=1.0, description="GAE λ (bias/variance trade-off; not the Lagrange multiplier)."
    )
    value_coef: float = Field(default=0.1, ge=0.0, description="Weight of the value-head loss (GAE only).")
    max_grad_norm: float = Field(default=1.0, gt=0.0, description="Global gradient-norm clip per optimiser step.")
    payoff_grad_norm_every: int = Field(
        default=1, ge=0,
        description="Compute the saddle-point diagnostic payoff_grad_norm (‖∇θ U‖) on every N-th update of "
        "each player (0: never). It costs an extra forward and backward over the rollouts, about a PPO "
        "epoch; updates it skips report NaN.",
    )
    tis_cap: float | None = Field(
        default=None, ge=1.0,
        description="Truncated importance sampling, for a rollout backend whose log-probs differ from the learner's "
        "(another engine, kernel or precision): when set, PPO ratios are taken against the learner's own log-probs "
        "before the update and each token's loss is weighted by min(π_learner/π_generator, tis_cap). None (off): "
        "ratios against the recorded behaviour log-probs. The mismatch is logged either way (logprob_mismatch_* "
        "in MonitorUpdated / PolicyUpdated).",
    )
    # --- bookkeeping ---
    checkpoint_every: int = Field(default=1, ge=1, description="Checkpoint every N policy updates.")
    eval_every: int = Field(default=1, ge=0, description="Evaluate every N policy updates (0: never).")
    eval_at_start: bool = Field(
        default=False,
        description="Also evaluate the untrained adapters before the first window: the baseline a run's "
        "movement is measured from (the report's learning signal).",
    )
    eval_samples_per_state: int = Field(
        default=4, ge=0,
        description="n: answers sampled per held-out state at evaluation (play temperature), besides the greedy one.",
    )
    eval_batch_size: int = Field(
        default=16, ge=1,
        description="Answers generated together at evaluation: first the greedy answers of all held-out states, "
        "then their samples, this many rows at a time. Decoding is bound by reading the weights once per "
        "token, so larger batches cost little more per step (lower it if a long story runs out of memory).",
    )
    # --- collapse (engine/diagnostics.py) ---
    collapse_unparsed_rate: float = Field(
        default=0.75, ge=0.0, le=1.0,
        description="Flag a player whose unparsed rate over a window reaches this (0: never).",
    )
    collapse_repetition: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Flag a player whose mean share of repeated token bigrams over a window reaches this (0: never).",
    )
    stop_on_collapse: bool = Field(
        default=False, description="End the run (RunFailed) when a player is flagged as collapsing."
    )

    @model_validator(mode="after")
    def _groups_fit_in_windows(self) -> TrainingConfig:
        if self.window_size % self.samples_per_state:
            raise ValueError(
                f"window_size ({self.window_size}) must be a multiple of samples_per_state "
                f"({self.samples_per_state}) so every group of samples is trained on together"
            )
        if self.advantage == "group" and self.samples_per_state < 2:
            raise ValueError('advantage = "group" needs samples_per_state >= 2; raise it or use "whiten"')
        return self


class LagrangianConfig(BaseModel):
    """[lagrangian]: dual ascent on λ (GAME.md §3)."""

    model_config = CONFIG_MODEL

    lambda_init: float = Field(default=10.0, ge=0.0, description="λ₀: the multiplier before the first dual step.")
    delta: float = Field(default=-0.2, le=1.0, description="δ: the constraint is E[f] ≤ δ.")
    step_size: float = Field(default=0.25, gt=0.0, description="η_λ: dual ascent step size.")
    lambda_max: float = Field(default=100.0, gt=0.0, description="Upper end of λ's projection.")
    variant: Literal["additive", "log"] = Field(
        default="additive", description='"additive": projected ascent on λ; "log": ascent on θ = log λ.'
    )
    update_delay: int = Field(default=0, ge=0, description="Monitor updates before λ starts moving.")
    rising_updates: int = Field(
        default=5, ge=0,
        description="N: flag λ after it rose on N consecutive updates while the violation did not shrink (0: never).",
    )

    @model_validator(mode="after")
    def _lambda_in_range(self) -> LagrangianConfig:
        if self.lambda_init > self.lambda_max:
            raise ValueError(f"lambda_init ({self.lambda_init}) exceeds lambda_max ({self.lambda_max})")
        if self.variant == "log" and self.lambda_init <= 0:
            raise ValueError('variant = "log" keeps λ = exp(θ) > 0: set lambda_init > 0')
        return self


Placement = str  # "auto", "cpu", "cuda", "cuda:N", "mps"


class DevicesConfig(BaseModel):
    """[devices]: where each role runs; "auto" shares GPUs when there are fewer than roles."""

    model_config = CONFIG_MODEL

    policy: Placement = Field(default="auto", description='Device of the policy: "auto", "cpu", "cuda", "cuda:N" or "mps".')
    monitor: Placement = Field(default="auto", description="Device of the monitor (as for policy).")
    reward: Placement = Field(default="auto", description="Device of the reward model (as for policy).")
    judge: Placement = Field(default="auto", description="Device of the judge (as for policy).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description='"auto": float32 on CPU, bfloat16 on GPU.'
    )

    @model_validator(mode="after")
    def _placements_known(self) -> DevicesConfig:
        for role in ROLES:
            value = getattr(self, role)
            if value not in ("auto", "cpu", "cuda", "mps") and not (
                value.startswith("cuda:") and value[5:].isdigit()
            ):
                raise ValueError(f'{role} = "{value}" is not a device: use "auto", "cpu" or "cuda:N"')
        return self


class WandbConfig(BaseModel):
    """[logging.wandb]: the W&B run's identity (the legacy layout's `logging.wandb_config`)."""

    model_config = CONFIG_MODEL

    project: str = Field(default="minmax-engine", min_length=1, description="W&B project the run is logged to.")
    entity: str | None = Field(default=None, description="W&B user or team; none: the account's default.")
    name: str | None = Field(default=None, description="W&B run name; none: the run id.")
    group: str | None = Field(default=None, description="W&B group, to view runs together.")
    tags: list[str] = Field(default_factory=list, description="W&B tags, besides the mode.")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        default=None, description="W&B mode ($WANDB_MODE overrides it); none: online with an API key, else offline."
    )


class LoggingConfig(BaseModel):
    """[logging]: where a run's metrics go besides its log (engine/trackers.py)."""

    model_config = CONFIG_MODEL

    backends: list[Literal["console", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["console"],
        description="Trackers fed from the log: the console progress bar, TensorBoard files, W&B (offline unless keyed).",
    )
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="W&B project, entity, name, group, tags, mode.")


class ClusterConfig(BaseModel):
    """[cluster]: where a run's roles, and a sweep's runs, execute (engine/cluster.py)."""

    model_config = CONFIG_MODEL

    backend: Literal["local", "ray"] = Field(
        default="local",
        description='"local": everything in this process; "ray": the four roles play in Ray actors placed from '
        "[devices], and sweep/compare dispatch each run as a Ray task (needs `pip install -e '.[ray]'`).",
    )
    address: str | None = Field(
        default=None,
        description='The Ray cluster to join: none starts a local Ray instance, "auto" joins the one this node '
        'belongs to, "ray://HOST:PORT" a remote one through Ray Client, "HOST:PORT" its head node.',
    )
    gpus_per_run: float = Field(
        default=0.0, ge=0.0, description="GPUs each run of a sweep or comparison asks Ray for (0 on CPU machines)."
    )

    @model_validator(mode="after")
    def _address_needs_ray(self) -> ClusterConfig:
        if self.address is not None and self.backend != "ray":
            raise ValueError(f'address = "{self.address}" is only read with backend = "ray"; set backend = "ray" or drop it')
        if self.address is not None and not (
            self.address == "auto" or self.address.startswith("ray://") or _is_host_port(self.address)
        ):
            raise ValueError(f'address = "{self.address}" is not a Ray address: use "auto", "ray://HOST:PORT" or "HOST:PORT"')
        return self


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


class RunConfig(BaseModel):
    """The whole run. Frozen: what RunStarted records is what played."""

    model_config = CONFIG_MODEL

    mode: Mode = Field(default="minmax", description='"minmax": policy vs monitor with λ; "rlhf": the baseline without a monitor.')
    seed: int = Field(default=0, ge=0, description="Seeds sampling, minibatch order and the state schedule.")
    run_dir: str = Field(default="runs", description="Parent directory of run directories.")
    policy: PlayerConfig = Field(default_factory=PlayerConfig, description="The policy L: answers and argues.")
    monitor: PlayerConfig = Field(default_factory=PlayerConfig, description="The monitor M: critiques the answer.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="The frozen reward model.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The frozen weak judge.")
    data: DataConfig = Field(default_factory=DataConfig, description="The states played: dataset and split.")
    game: GameConfig = Field(default_factory=GameConfig, description="The payoffs of GAME.md §2.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="TTUR PPO schedule and knobs.")
    lagrangian: LagrangianConfig = Field(default_factory=LagrangianConfig, description="Dual ascent on λ.")
    devices: DevicesConfig = Field(default_factory=DevicesConfig, description="Where each role runs.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Trackers besides the log.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Local or Ray execution of roles and runs.")

    @model_validator(mode="before")
    @classmethod
    def _one_reward_norm(cls, raw: Any) -> Any:
        # reward.normalization (referees) and game.reward_norm (payoffs) name the same knob;
        # either may be set, and the resolved config carries the one value in both places.
        if not isinstance(raw, dict):
            return raw
        reward, game = raw.get("reward", {}), raw.get("game", {})
        if not isinstance(reward, dict) or not isinstance(game, dict):
            return raw
        from_reward, from_game = reward.get("normalization"), game.get("reward_norm")
        if from_reward is not None and from_game is not None and from_reward != from_game:
            raise ValueError(
                f"reward.normalization ({from_reward!r}) and game.reward_norm ({from_game!r}) disagree; set only one"
            )
        chosen = from_game or from_reward
        if chosen is None:
            return raw
        return {**raw, "reward": {**reward, "normalization": chosen}, "game": {**game, "reward_norm": chosen}}

    @field_validator("policy", "monitor")
    @classmethod
    def _whole_distribution_sampled(cls, player: PlayerConfig) -> PlayerConfig:
        # PPO's ratios divide by the recorded behaviour probability, which is the full tempered
        # distribution's; nucleus sampling would draw from another one and bias every ratio.
        if player.top_p < 1.0:
            raise ValueError(
                f"top_p = {player.top_p} would draw tokens from the nucleus while PPO trains on the full "
                "distribution's log-probs (biased ratios); set top_p = 1.0"
            )
        return player

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults included, as JSON-ready values (RunStarted.config)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class ConfigOverrides:
    """Command-line flags that replace config values before validation."""

    num_epochs: int | None = None
    dataset: str | None = None
    mode: str | None = None
    run_dir: str | None = None
    seed: int | None = None
    # Any other setting, by its dotted key ("training.policy_learning_rate"), applied last.
    settings: tuple[tuple[str, Any], ...] = ()


# --- loading -------------------------------------------------------------------------------


def load_config(path: Path, overrides: ConfigOverrides | None = None) -> tuple[RunConfig, list[str]]:
    """Read, translate (legacy JSON), override and validate a config file.

    Returns the config and the warnings a user should see (settings that are legal but will
    not do what they probably want).
    """
    raw = _read_file(path)
    warnings: list[str] = []
    if _is_legacy_layout(raw):
        raw = _translate_legacy(raw, path, warnings)
    raw = _apply_overrides(raw, overrides or ConfigOverrides())
    config = config_from_dict(raw, source=str(path))
    return config, warnings + config_warnings(config)


def config_from_dict(raw: dict[str, Any], source: str) -> RunConfig:
    """Validate a config mapping; `source` names it in error messages (a file path)."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise UserError(_describe_validation_error(error, source)) from None


def recorded_config(recorded: dict[str, Any], run: str) -> RunConfig:
    """A run's RunStarted.config, validated again: every reader of a run's settings (resume,
    eval, replay, trackers) goes through here; `run` names the run in errors."""
    return config_from_dict(recorded, source=f"{run} (RunStarted.config)")


def config_warnings(config: RunConfig) -> list[str]:
    """Legal settings that will likely not do what the user wants (GAME.md §2, §3)."""
    warnings = []
    lowest_f = lowest_reachable_penalty(config.game.alpha)
    if config.mode == "minmax" and config.lagrangian.delta < lowest_f:
        warnings.append(
            f"lagrangian.delta = {config.lagrangian.delta} is below the lowest reachable f = "
            f"-(1 - alpha) = {lowest_f:g}: the constraint can never hold and λ will climb to "
            f"lambda_max; raise delta to at least {lowest_f:g}"
        )
    training = config.training
    if config.mode == "minmax" and training.monitor_learning_rate < training.policy_learning_rate:
        warnings.append(
            "training.monitor_learning_rate is below policy_learning_rate: TTUR expects the "
            "monitor (the faster player) to have the higher learning rate"
        )
    return warnings


def default_role_notices(config: RunConfig) -> list[str]:
    """One line per role whose model the config does not name, e.g. "reward: embedded
    SmolLM2-135M-Instruct (not set in config)": a default model must never be a silent one."""
    roles: list[Role] = ["policy", "reward", "judge"] if config.mode == "rlhf" else list(ROLES)
    notices = []
    for role in roles:
        section = getattr(config, role)
        if "model" not in section.model_fields_set:
            model = section.model
            shown = f"embedded {model.removeprefix('embedded:')}" if model.startswith("embedded:") else model
            notices.append(f"{role}: {shown} (not set in config)")
    return notices


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass --config configs/tiny.toml or a path to your own")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x}); save it as UTF-8"
        ) from None
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raise UserError(f"{path}: unknown config format; use a .toml or .json file")
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error}); fix the syntax there") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}: {error.msg}); fix the syntax there") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a table/object of settings")
    return raw


def _apply_overrides(raw: dict[str, Any], overrides: ConfigOverrides) -> dict[str, Any]:
    merged = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}

    def set_in(table: str, key: str, value: object) -> None:
        section = merged.setdefault(table, {})
        if not isinstance(section, dict):
            return  # validation reports the malformed table itself
        section[key] = value

    if overrides.num_epochs is not None:
        set_in("training", "num_epochs", overrides.num_epochs)
    if overrides.dataset is not None:
        set_in("data", "dataset", overrides.dataset)
    if overrides.mode is not None:
        merged["mode"] = overrides.mode
    if overrides.run_dir is not None:
        merged["run_dir"] = overrides.run_dir
    if overrides.seed is not None:
        merged["seed"] = overrides.seed
    for dotted, value in overrides.settings:
        *tables, key = dotted.split(".")
        section = merged
        for table in tables:
            inner = section.get(table, {})
            if not isinstance(inner, dict):
                break  # validation reports the malformed table itself
            section[table] = dict(inner)
            section = section[table]
        else:
            section[key] = value
    return merged


def parse_value(text: str) -> Any:
    """A value given on the command line, read as TOML (number, boolean, quoted string, list);
    anything else is taken as a string: `8` -> 8, `1e-4` -> 0.0001, `rlhf` -> "rlhf"."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


# --- the legacy JSON layout ----------------------------------------------------------------

_LEGACY_SECTIONS = ("policy_model", "monitor_model", "reward_model", "judge_model", "training", "logging")
_LEGACY_PLAYER_KEYS = {"model_name": "model", "lora_r": "lora_r", "temperature": "temperature",
                       "max_new_tokens": "max_new_tokens"}
# Sampling and LoRA settings mean nothing for a frozen referee scored in one forward pass.
_LEGACY_REFEREE_IGNORED = ("use_lora", "lora_r", "temperature", "max_new_tokens")
_LEGACY_TRAINING_KEYS: dict[str, tuple[str, str]] = {
    "policy_learning_rate": ("training", "policy_learning_rate"),
    "monitor_learning_rate": ("training", "monitor_learning_rate"),
    "monitor_updates_per_policy": ("training", "monitor_updates_per_policy"),
    "batch_size": ("training", "window_size"),
    "num_epochs": ("training", "num_epochs"),
    "constraint_penalty_lambda": ("lagrangian", "lambda_init"),
    "constraint_threshold": ("lagrangian", "delta"),
    "dual_ascent_step_size": ("lagrangian", "step_size"),
}


def _is_legacy_layout(raw: dict[str, Any]) -> bool:
    return any(key.endswith("_model") for key in raw) and "policy" not in raw


def _translate_legacy(raw: dict[str, Any], path: Path, warnings: list[str]) -> dict[str, Any]:
    """Map {policy_model, monitor_model, reward_model, judge_model, training, logging} onto ours."""
    for key in raw:
        if key not in _LEGACY_SECTIONS:
            raise UserError(
                f"{path}: {key}: unknown key in the legacy JSON layout; expected only "
                f"{', '.join(_LEGACY_SECTIONS)} (or write the TOML layout of configs/tiny.toml)"
            )

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise UserError(f"{path}: {name}: must be an object of settings")
        return value

    # The original project's RLHF baseline config is the same layout without the monitor.
    translated: dict[str, Any] = {"mode": "minmax" if "monitor_model" in raw else "rlhf"}
    for role in ("policy", "monitor"):
        if f"{role}_model" not in raw:
            continue
        legacy = section(f"{role}_model")
        player: dict[str, Any] = {}
        for key, value in legacy.items():
            if key == "use_lora":
                if value is not True:
                    raise UserError(
                        f"{path}: {role}_model.use_lora: minmax-engine trains LoRA adapters only; "
                        "set it to true or remove it"
                    )
            elif key in _LEGACY_PLAYER_KEYS:
                player[_LEGACY_PLAYER_KEYS[key]] = value
            else:
                raise UserError(f"{path}: {role}_model.{key}: unknown key; remove it (known: "
                                f"{', '.join(['use_lora', *_LEGACY_PLAYER_KEYS])})")
        translated[role] = player
    for role in ("reward", "judge"):
        legacy = section(f"{role}_model")
        referee: dict[str, Any] = {}
        for key, value in legacy.items():
            if key == "model_name":
                referee["model"] = value
            elif key in _LEGACY_REFEREE_IGNORED:
                warnings.append(f"{path}: {role}_model.{key} is ignored: the {role} is frozen and scored in one forward pass")
            else:
                raise UserError(f"{path}: {role}_model.{key}: unknown key; remove it (known: model_name)")
        if f"{role}_model" in raw:
            translated[role] = referee
    for key, value in section("training").items():
        if key not in _LEGACY_TRAINING_KEYS:
            raise UserError(
                f"{path}: training.{key}: unknown key in the legacy layout; remove it (known: "
                f"{', '.join(_LEGACY_TRAINING_KEYS)})"
            )
        table, new_key = _LEGACY_TRAINING_KEYS[key]
        translated.setdefault(table, {})[new_key] = value
    for key, value in section("logging").items():
        if key not in ("backends", "wandb_config"):
            raise UserError(f"{path}: logging.{key}: unknown key; remove it (known: backends, wandb_config)")
        translated.setdefault("logging", {})["wandb" if key == "wandb_config" else key] = value
    return translated


# --- error messages ------------------------------------------------------------------------

# Fixes worth more than "the default": why a value matters, in the words of GAME.md.
_FIX_HINTS: dict[str, str] = {
    "training.monitor_updates_per_policy": "set it to 5 (the TTUR default)",
    "game.alpha": "set it between 0 and 1; 0.7 is the default (verdict/reward weights 0.7/0.3)",
    "policy.temperature": "set it above 0; 1.0 samples from the model as trained",
    "monitor.temperature": "set it above 0; 1.0 samples from the model as trained",
    "mode": 'set it to "minmax" or "rlhf"',
}


def _field_default(loc: tuple[int | str, ...]) -> object:
    model: type[BaseModel] | None = RunConfig
    field = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if field is None or model is not None:
        return None
    return field.get_default(call_default_factory=True)


def _describe_validation_error(error: ValidationError, source: str) -> str:
    problems = error.errors(include_url=False)
    first = problems[0]
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    key = ".".join(str(part) for part in loc) or "(top level)"
    kind = first["type"]
    context = first.get("ctx") or {}
    given = first.get("input")
    if kind == "extra_forbidden":
        message, fix = "unknown key", "remove it or check its spelling against docs/ARCHITECTURE.md"
    elif kind == "missing":
        message, fix = "required", "add it"
    else:
        readable = {
            "greater_than_equal": f"must be >= {context.get('ge')}",
            "greater_than": f"must be > {context.get('gt')}",
            "less_than_equal": f"must be <= {context.get('le')}",
            "less_than": f"must be < {context.get('lt')}",
            "literal_error": f"must be {context.get('expected')}",
            # strict types: nothing is coerced, so say what kind of value belongs there
            "int_type": "must be an integer",
            "float_type": "must be a number",
            "finite_number": "must be a finite number",
            "bool_type": "must be true or false",
            "string_type": "must be a string",
            "list_type": "must be a list",
        }
        message = readable.get(kind) or first["msg"].removeprefix("Value error, ")
        message = f"{message} (got {given!r})" if not isinstance(given, dict) else message
        default = _field_default(loc)
        fix = _FIX_HINTS.get(key) or (f"set it to {default!r} (the default)" if default is not None else "")
    more = f" [and {len(problems) - 1} more problem(s)]" if len(problems) > 1 else ""
    return f"{source}: {key}: {message}" + (f"; {fix}" if fix else "") + more
