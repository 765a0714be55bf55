"""Our RLHF-mode PPO step against TRL's GRPOTrainer doing the same work, on the real SmolLM2.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ppo_vs_trl.py [--steps 3] [--warmup 1] [--skip-trl]
    (--model DIR runs the same comparison on another local model, e.g. a tiny one as a smoke test)

The work of one step, identical on both sides:
    1. generate 8 completions (temperature 1, up to 64 new tokens) for one ≈330-token prompt
       with the LoRA policy (r 16, alpha 32 on q/k/v/o of SmolLM2-135M-Instruct, fp32, CPU);
    2. score them with a trivial reward (the completion's length in characters / 100);
    3. reference log-probs (adapters disabled, no grad), one policy forward + backward over
       all 8 sequences with the clipped ratio loss + β·k3 KL (β = 0.04), group-relative
       advantages, token-level loss normalisation, one AdamW step (lr 1e-5). Our learner's
       payoff diagnostic ‖∇θ U‖ (a second backward, work TRL does not do) is off unless
       --payoff-diagnostic asks for it.
TRL's side is `GRPOTrainer.train()` with num_generations = per_device_train_batch_size = 8,
num_iterations = 1, gradient checkpointing off (faster on CPU; we do not checkpoint either),
fp32; its step time is the wall time between consecutive `on_step_end` callbacks, which
covers its generation, reward, reference pass and optimiser step. Ours is the wall time of
`Player.generate_from_ids` + reward + `PPOLearner.update`. Process CPU seconds per step are
printed beside the wall times: on a machine shared with other work they move much less.

Equal work needs equal completion lengths, so by default neither side stops at EOS: every
completion is exactly 64 tokens. TRL gets generation_kwargs min_new_tokens = 64 (transformers
masks the EOS logits until then); our player is wrapped so that no token ends a row (an EOS
it samples is kept as an ordinary token and trained on). The sampled distributions differ
only in EOS's mass, the shapes and FLOPs are identical. --stop-at-eos restores sampling until
EOS on both sides; the completion tokens each side generated are printed either way, and the
ratio is also given per generated token in case they differ.

--threads sets torch's intra-op threads for the whole process (both sides). On a 2-core machine
busy with other work use --threads 1: with 2, every small matmul waits at an OpenMP barrier
for a descheduled thread (measured on such a machine: an 8×576 · 576×1536 linear took 32 ms
on 2 threads against 1.2 ms on 1, and a whole step of ours ran 12× slower).

Our frozen linears run through oneDNN (players/cpu_linear.py, the engine's default on a CPU);
TRL's run as transformers runs them, through torch's BLAS, unless --trl-onednn routes them too
(which separates the kernel's share of the ratio from the engine's).

Also printed: our generation tokens/s, the learner's achieved GFLOP/s and the fp32 matmul
peak measured here (a 2048² product on the same threads, by the faster of BLAS and oneDNN). FLOPs of the learner count
the work it actually does (it encodes a shared prompt once, see engine/ppo.py detail 12):
2·(non-embedding parameters)·(tokens through the trunk) + 2·hidden·vocab·(scored positions)
per forward, for the reference forward, the policy forward and the backward (input
gradients only: the base is frozen; LoRA's own FLOPs are left out, < 2%). A second figure adds
attention's own products (QK^T, AV), as model-FLOPs-utilisation figures usually do.

Where the learner's time goes: one more update, after the timed steps, runs under torch's
profiler, and its time is split by operator into the linear layers' products (oneDNN's and
BLAS's, LoRA's included), attention (the fused scaled-dot-product kernels, forward and
backward) and everything else (norms, rotary, activations, the loss, autograd's own work, the
optimiser). From the split comes the share of the peak the learner would reach if its products
ran at the full peak and the rest took what it takes now: the most that speeding up products
alone can buy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.config import RunConfig  # noqa: E402
from engine.game import ppo_settings  # noqa: E402
from engine.ppo import PPOLearner, Rollout, SharedPromptBatch, predicting_hidden_states  # noqa: E402
from players import ModelPool, Player, PlayerConfig, policy_messages  # noqa: E402
from players.cpu_linear import onednn_available, onednn_product, route_frozen_linears  # noqa: E402

MODEL = "embedded:SmolLM2-135M-Instruct"
N_COMPLETIONS = 8
MAX_NEW_TOKENS = 64
PROMPT_TOKENS = 330
LORA_R, LORA_ALPHA, TARGETS = 16, 32.0, ["q_proj", "k_proj", "v_proj", "o_proj"]
LEARNING_RATE, KL_COEF = 1e-5, 0.04

SENTENCES = [
    "Mara kept the lighthouse on the northern cape for eleven winters.",
    "Each evening she climbed the hundred and twelve steps with a can of oil and a lantern.",
    "The fishermen of the village trusted her light more than their own charts.",
    "One autumn a storm broke the great lens, and the nearest glazier lived three days away.",
    "Mara lit every lamp she owned and set them in a ring around the empty frame.",
    "The ring of small flames was weaker than the lens, but it turned because she turned it by hand.",
    "All night she walked the gallery, pushing the frame so the ships would still see a moving beam.",
    "At dawn the harbour master counted the boats and found that none was missing.",
    "When the glazier finally came, he asked why the frame's handle was worn smooth.",
    "Mara said only that the sea does not wait for repairs.",
]


def reading_prompt(player: Player) -> list[int]:
    """A reading-comprehension prompt of about PROMPT_TOKENS tokens, built from the story."""
    story: list[str] = []
    while True:
        story.append(SENTENCES[len(story) % len(SENTENCES)])
        messages = policy_messages(
            " ".join(story),
            "Why did Mara turn the frame by hand during the storm?",
            ["To keep warm", "So ships still saw a moving beam", "To test the glazier", "Because the oil ran out"],
        )
        ids = player.encode_prompt(player.render_prompt(messages))
        if len(ids) >= PROMPT_TOKENS:
            return ids


def trivial_reward(texts: list[str]) -> list[float]:
    return [len(text) / 100.0 for text in texts]


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """Best GFLOP/s of a size² fp32 product, per wall second and per process CPU second, by
    the faster of torch's two CPU libraries: BLAS (torch.matmul) and oneDNN (what the learner's
    frozen linears use, players/cpu_linear.py). On this project's AMD machines oneDNN's is
    about twice MKL's, so a peak measured with torch.matmul alone would flatter the learner."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = {"BLAS": lambda: torch.matmul(a, b)}
    if onednn_available():
        products["oneDNN"] = lambda: onednn_product(a, b, None)
    best, best_cpu = float("inf"), float("inf")
    for library, product in products.items():
        product()
        library_best = float("inf")
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            product()
            library_best = min(library_best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu_start)
        print(f"  fp32 {size}x{size} product by {library}: {2 * size**3 / library_best / 1e9:.1f} GFLOP/s", flush=True)
        best = min(best, library_best)
    flops = 2 * size**3
    return flops / best / 1e9, flops / best_cpu / 1e9 / torch.get_num_threads()


def learner_flops(player: Player, prompt_len: int, response_lens: list[int], backwards: int = 1) -> float:
    model = player.model.get_base_model()
    hidden, vocab = model.config.hidden_size, model.config.vocab_size
    embedding_params = model.get_input_embeddings().weight.numel()
    trunk_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) - embedding_params
    if not model.config.tie_word_embeddings:
        trunk_params -= model.get_output_embeddings().weight.numel()
    trunk_tokens = prompt_len + sum(length - 1 for length in response_lens)  # shared prompt once
    scored = sum(response_lens)
    one_forward = 2 * trunk_params * trunk_tokens + 2 * hidden * vocab * scored
    # The reference forward, the policy forward, and each backward (input gradients): the PPO
    # loss's, plus the payoff diagnostic's over the same kept graph when it runs.
    return (2 + backwards) * one_forward


def attention_flops(player: Player, prompt_len: int, response_lens: list[int], backwards: int = 1) -> float:
    """The attention products' FLOPs (QK^T and AV: 4·heads·head_dim per query-key pair) that
    learner_flops leaves out, counted as model-FLOPs utilisation usually counts them: the
    shared prompt's causal pass once, each response position over its prompt and the response
    before it; a backward as 2.5 forwards (it recomputes the scores and forms dQ, dK, dV)."""
    config = player.model.get_base_model().config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    pairs = prompt_len * (prompt_len + 1) // 2 + sum(
        sum(prompt_len + j + 1 for j in range(length - 1)) for length in response_lens
    )
    one_forward = 4 * config.num_attention_heads * head_dim * pairs * config.num_hidden_layers
    return (2 + 2.5 * backwards) * one_forward


def update_time_split(learner: PPOLearner, rollouts: list[Rollout]) -> dict[str, float]:
    """Seconds of one `learner.update` (it does update the policy) by kind of operator, from
    the profiler's self times on the calling thread (intra-op threads work inside them); the
    rest of the update's wall time under the profiler is "rest"."""
    linear_products = {"mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm"}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        learner.update(rollouts)
        wall = time.perf_counter() - start
    split = {"products": 0.0, "attention": 0.0, "wall": wall}
    for event in profiler.key_averages():
        if event.key in linear_products:
            split["products"] += event.self_cpu_time_total / 1e6
        elif "scaled_dot_product" in event.key:
            split["attention"] += event.self_cpu_time_total / 1e6
    # Everything else, Python between operators and the profiler's own overhead included.
    split["rest"] = wall - split["products"] - split["attention"]
    return split


def behaviour_ratio_error(learner: PPOLearner, rollouts: list[Rollout]) -> float:
    """max |exp(learner log-prob − behaviour log-prob) − 1| over the rollouts' tokens."""
    batch = SharedPromptBatch.build(rollouts, learner.player.pad_token_id, learner.player.device)
    with torch.no_grad(), learner.player.active():
        logprobs, _ = learner._token_logprobs(predicting_hidden_states(learner.player, batch), batch, with_entropy=False)
    ratio = torch.exp(logprobs - batch.behaviour_logprobs)
    return float(((ratio - 1.0).abs() * batch.response_mask).max())


class FullLengthPlayer(Player):
    """A Player that never stops a row early: every completion runs to max_new_tokens, as
    TRL's does with min_new_tokens = max_completion_length (equal work on both sides)."""

    @property
    def eos_token_ids(self) -> set[int]:
        return set()


def bench_ours(args: argparse.Namespace, pool: ModelPool) -> dict[str, float]:
    config = PlayerConfig(
        model=args.model, lora_r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS
    )
    policy = Player.create(pool, "policy", config)
    if not args.stop_at_eos:
        policy = FullLengthPlayer(policy.base, policy.role, policy.config)
    learner = PPOLearner(
        policy,
        dataclasses.replace(
            ppo_settings(RunConfig(), "policy"),  # the default config's settings, the compared knobs set
            learning_rate=LEARNING_RATE, kl_coef=KL_COEF, advantage="group", minibatch_size=N_COMPLETIONS, ppo_epochs=1,
            # ‖∇θ U‖ (engine/ppo.py detail 9) is our diagnostic, not work TRL does: off unless asked.
            payoff_grad_norm_every=1 if args.payoff_diagnostic else 0,
            # Every step here repeats one prompt, so a reference prompt cache would find it every
            # time after the first: a saving the game sees only on epochs after its first.
            reference_cache_bytes=0,
        ),
    )
    prompt = reading_prompt(policy)
    backwards = 2 if args.payoff_diagnostic else 1  # the PPO loss's, and the diagnostic's when on
    step_times, cpu_times, generation_times, update_times, update_cpu_times, tokens, flops = [], [], [], [], [], [], []
    attention: list[float] = []
    generation_cpu_times: list[float] = []
    for step in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        generations = policy.generate_from_ids([prompt] * N_COMPLETIONS, seed=step)
        generated, cpu_generated = time.perf_counter(), time.process_time()
        rewards = trivial_reward([g.text for g in generations])
        rollouts = [Rollout(g.prompt_ids, g.token_ids, g.logprobs, r, "prompt-0") for g, r in zip(generations, rewards)]
        learner.update(rollouts)
        end, cpu_end = time.perf_counter(), time.process_time()
        n_tokens = sum(len(g.token_ids) for g in generations)
        label = "warm-up" if step < args.warmup else "timed"
        print(f"  ours {label} step {step}: {end - start:.2f}s (generation {generated - start:.2f}s, "
              f"update {end - generated:.2f}s, {n_tokens} completion tokens; {cpu_end - cpu_start:.2f} CPU s)", flush=True)
        if step >= args.warmup:
            step_times.append(end - start)
            cpu_times.append(cpu_end - cpu_start)
            generation_times.append(generated - start)
            generation_cpu_times.append(cpu_generated - cpu_start)
            update_times.append(end - generated)
            update_cpu_times.append(cpu_end - cpu_generated)
            tokens.append(n_tokens)
            response_lens = [len(g.token_ids) for g in generations]
            flops.append(learner_flops(policy, len(prompt), response_lens, backwards))
            attention.append(attention_flops(policy, len(prompt), response_lens, backwards))
        if step == 0:
            # The un-updated policy's PPO ratio, checked outside the timed steps: the learner's
            # forward pass against the behaviour log-probs generation recorded.
            probe = policy.generate_from_ids([prompt] * N_COMPLETIONS, seed=10_000)
            ratio_error = behaviour_ratio_error(learner, [Rollout(g.prompt_ids, g.token_ids, g.logprobs, 0.0, "probe") for g in probe])
    split = update_time_split(learner, rollouts)  # after the timed steps: it costs them nothing
    return {
        **{f"split_{kind}": seconds for kind, seconds in split.items()},
        "split_flops": flops[-1],
        "ratio_error": ratio_error,
        "prompt_tokens": float(len(prompt)),
        "step": statistics.median(step_times),
        "cpu": statistics.median(cpu_times),
        "generation": statistics.median(generation_times),
        "update": statistics.median(update_times),
        "tokens": statistics.mean(tokens),
        "generation_tokens_per_s": sum(tokens) / sum(generation_times),
        "generation_tokens_per_cpu_s": sum(tokens) / sum(generation_cpu_times) * torch.get_num_threads(),
        "learner_gflops": sum(flops) / sum(update_times) / 1e9,
        "learner_gflops_cpu": sum(flops) / sum(update_cpu_times) / 1e9 / torch.get_num_threads(),
        "learner_gflops_with_attention": (sum(flops) + sum(attention)) / sum(update_times) / 1e9,
    }


def bench_trl(args: argparse.Namespace, pool: ModelPool, prompt_text: str) -> dict[str, float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    checkpoint = pool.resolve(args.model)  # the same converted SmolLM2 checkpoint, a separate copy
    # Caches converted before 2026-11-25 kept a quantization_config in config.json although
    # the saved weights are de-quantized fp32; HF's Trainer refuses "GGUF-quantized" models,
    # so load without it (the weights are bit-identical to the ones our player loads).
    model_config = AutoConfig.from_pretrained(checkpoint)
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    model = AutoModelForCausalLM.from_pretrained(checkpoint, config=model_config, dtype=torch.float32)
    if args.trl_onednn:
        # The same kernel our engine's frozen linears use (peft freezes the base; a trainable
        # weight keeps F.linear), to separate the kernel's share of the ratio from the rest.
        route_frozen_linears(model, "onednn")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.padding_side = "left"
    n_steps = args.warmup + args.steps
    dataset = Dataset.from_list([{"prompt": prompt_text}] * n_steps)
    completion_tokens: list[int] = []

    def reward(completions: list[str], completion_ids: list[list[int]], **_: object) -> list[float]:
        completion_tokens.append(sum(len(ids) for ids in completion_ids))
        return trivial_reward(completions)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks = [time.perf_counter()]
            self.cpu_marks = [time.process_time()]

        def on_step_end(self, *_: object, **__: object) -> None:
            self.marks.append(time.perf_counter())
            self.cpu_marks.append(time.process_time())
            step = len(self.marks) - 2
            print(f"  TRL step {step}: {self.marks[-1] - self.marks[-2]:.2f}s "
                  f"({self.cpu_marks[-1] - self.cpu_marks[-2]:.2f} CPU s)", flush=True)

    timer = StepTimer()
    config = GRPOConfig(
        output_dir=str(Path(args.scratch) / "trl"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        learning_rate=LEARNING_RATE,
        beta=KL_COEF,
        num_generations=N_COMPLETIONS,
        per_device_train_batch_size=N_COMPLETIONS,
        gradient_accumulation_steps=1,
        num_iterations=1,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        max_steps=n_steps,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        shuffle_dataset=False,
        seed=0,
        # Equal work with our FullLengthPlayer: no completion ends before the budget.
        generation_kwargs=None if args.stop_at_eos else {"min_new_tokens": MAX_NEW_TOKENS},
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM"),
        callbacks=[timer],
    )
    trainer.train()
    intervals = [b - a for a, b in zip(timer.marks, timer.marks[1:])][args.warmup :]
    cpu_intervals = [b - a for a, b in zip(timer.cpu_marks, timer.cpu_marks[1:])][args.warmup :]
    timed_tokens = completion_tokens[args.warmup :]
    return {
        "step": statistics.median(intervals),
        "cpu": statistics.median(cpu_intervals),
        "tokens": statistics.mean(timed_tokens),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, both sides (1 on a busy machine)")
    parser.add_argument("--skip-trl", action="store_true", help="time our step only (profiling)")
    parser.add_argument("--skip-ours", action="store_true", help="time TRL's step only")
    parser.add_argument("--payoff-diagnostic", action="store_true",
                        help="also compute the game's ‖∇θ U‖ diagnostic in our update (one more backward; TRL has no such work)")
    parser.add_argument("--trl-onednn", action="store_true",
                        help="run TRL's frozen linears through oneDNN too (players/cpu_linear.py), as ours do by default")
    parser.add_argument("--stop-at-eos", action="store_true", help="let both sides stop at EOS (unequal lengths)")
    parser.add_argument("--scratch", default="/tmp/minmax-engine-bench")
    parser.add_argument("--model", default=MODEL, help="model spec (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with os.popen("uptime") as uptime:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, uptime: {uptime.read().strip()}")
    peak, peak_cpu = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s on {args.threads} threads ({peak_cpu:.1f} per CPU second of one thread)", flush=True)
    print("completions: " + ("until EOS or " if args.stop_at_eos else "exactly ") + f"{MAX_NEW_TOKENS} tokens on both sides", flush=True)
    pool = ModelPool()
    ours = None if args.skip_ours else bench_ours(args, pool)
    base = pool.causal_lm(args.model, "cpu", torch.float32)
    prompt_text = base.tokenizer.decode(reading_prompt(Player(base, "policy", PlayerConfig(model=args.model))))
    if ours is not None:
        # The peak again after our steps: on a shared machine the better of the two is the
        # fairer yardstick.
        peak_after, peak_cpu_after = matmul_peak_gflops()
        report_ours(ours, max(peak, peak_after), max(peak_cpu, peak_cpu_after))
    if args.skip_trl:
        return 0
    trl = bench_trl(args, pool, prompt_text)
    print(f"TRL GRPOTrainer: step {trl['step']:.2f}s ({trl['cpu']:.2f} CPU s), {trl['tokens']:.0f} completion tokens per step")
    if ours is None:
        return 0
    ratio = trl["step"] / ours["step"]
    per_token = (trl["step"] / trl["tokens"]) / (ours["step"] / ours["tokens"])
    print(f"speed-up ours vs TRL: {ratio:.2f}x per step, {per_token:.2f}x per generated token (target >= 5x)")
    print(f"  in process CPU seconds (steadier on a busy machine): {trl['cpu'] / ours['cpu']:.2f}x per step")
    return 0


def report_ours(ours: dict[str, float], peak: float, peak_cpu: float) -> None:
    print(f"ours: step {ours['step']:.2f}s ({ours['cpu']:.2f} CPU s; generation {ours['generation']:.2f}s, update {ours['update']:.2f}s), "
          f"prompt {ours['prompt_tokens']:.0f} tokens, {ours['tokens']:.0f} completion tokens per step")
    print(f"ours: generation {ours['generation_tokens_per_s']:.1f} tokens/s (target >= 150); learner {ours['learner_gflops']:.1f} GFLOP/s "
          f"= {100 * ours['learner_gflops'] / peak:.0f}% of the matmul peak (target >= 70%)")
    print(f"ours: generation {ours['generation_tokens_per_cpu_s']:.1f} tokens/s had its threads run uncontended (tokens per CPU second x threads; steadier on a busy machine)")
    print(f"ours: learner {ours['learner_gflops_cpu']:.1f} GFLOP per CPU second of one thread = "
          f"{100 * ours['learner_gflops_cpu'] / peak_cpu:.0f}% of the matmul peak per CPU second (steadier on a busy machine)")
    print(f"ours: learner {ours['learner_gflops_with_attention']:.1f} GFLOP/s = "
          f"{100 * ours['learner_gflops_with_attention'] / peak:.0f}% of the matmul peak when attention's products are "
          f"counted too (the usual model-FLOPs-utilisation count; the figures above count the weights' products only)")
    total = ours["split_wall"]
    products_at_peak = ours["split_flops"] / (peak * 1e9)
    print(f"ours: one more update under the profiler, {ours['split_wall']:.3f}s: linear products {ours['split_products']:.3f}s "
          f"({100 * ours['split_products'] / total:.0f}%; the weights' FLOPs at {ours['split_flops'] / ours['split_products'] / 1e9:.1f} GFLOP/s "
          f"= {100 * ours['split_flops'] / ours['split_products'] / 1e9 / peak:.0f}% of the peak), attention {ours['split_attention']:.3f}s "
          f"({100 * ours['split_attention'] / total:.0f}%), the rest {ours['split_rest']:.3f}s ({100 * ours['split_rest'] / total:.0f}%: "
          f"norms, rotary, activations, loss, autograd, optimiser, Python, the profiler's overhead)")
    print(f"ours: with its products at the full peak and the rest as measured, the learner would reach "
          f"{100 * products_at_peak / (products_at_peak + ours['split_attention'] + ours['split_rest']):.0f}% of the peak")
    print(f"ours: un-updated policy's PPO ratio within {ours['ratio_error']:.1e} of 1 (learner forward vs behaviour log-probs)")


if __name__ == "__main__":
    sys.exit(main())
