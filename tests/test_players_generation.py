"""Generation on a tiny random Llama: determinism, EOS handling, and behaviour log-probs that a
learner's fresh forward pass reproduces (the acceptance test of issue 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine.ppo import PPOLearner, Rollout, SharedPromptBatch, predicting_hidden_states
from players import ModelPool, Player, PlayerConfig, policy_messages
from players.backend import _draw
from tests.learner_settings import learner_settings

STORIES = [
    "A fox ran.",
    "The baker left the mill before dawn and the farmer followed him to the river.",
    "Once upon a time a small fox lived near the old mill by the hill, and every day it ran.",
]


def make_player(model_dir: Path, tmp_path: Path, **settings: object) -> Player:
    config = PlayerConfig(model=str(model_dir), **{"max_new_tokens": 10, **settings})
    return Player.create(ModelPool(cache_dir=tmp_path), role="policy", config=config)


def prompts_for(player: Player) -> list[str]:
    return [
        player.render_prompt(policy_messages(story, "Who ran?", ["the fox", "the farmer"]))
        for story in STORIES
    ]


def forward_logprobs(player: Player, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """The reference: one unpadded sequence through the adapted model, no cache."""
    with torch.inference_mode(), player.active():
        ids = torch.tensor([prompt_ids + token_ids])
        logits = player.model(input_ids=ids).logits[0].float() / player.config.temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    first = len(prompt_ids) - 1
    return [float(logprobs[first + i, token]) for i, token in enumerate(token_ids)]


def token_unique_to_one_row(token_rows: list[list[int]]) -> int:
    """The earliest token that only one row generates: declared the end-of-sequence token, it
    ends that row early and no other (a random model almost never emits its real EOS)."""
    for position in range(1, max(len(row) for row in token_rows)):
        for row, tokens in enumerate(token_rows):
            if position < len(tokens):
                token = tokens[position]
                if all(token not in other for index, other in enumerate(token_rows) if index != row):
                    return token
    raise AssertionError(f"every token is shared between rows: {token_rows}")


def test_chat_template_renders_and_prompts_encode_without_a_second_bos(tiny_lm_dir: Path, tmp_path: Path) -> None:
    player = make_player(tiny_lm_dir, tmp_path)
    prompt = prompts_for(player)[0]
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert player.tokenizer.decode(player.encode_prompt(prompt)) == prompt


def test_same_seed_same_generations_and_different_seeds_differ(tiny_lm_dir: Path, tmp_path: Path) -> None:
    player = make_player(tiny_lm_dir, tmp_path)
    prompts = prompts_for(player)
    first = player.generate(prompts, seed=3)
    assert player.generate(prompts, seed=3) == first
    assert [g.token_ids for g in player.generate(prompts, seed=4)] != [g.token_ids for g in first]
    for generation in first:
        assert len(generation.token_ids) == len(generation.logprobs) == 10
        assert all(logprob <= 0.0 for logprob in generation.logprobs)
        assert generation.text == player.tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip()


def test_rows_stop_at_their_own_eos_and_the_rest_are_unaffected(tiny_lm_dir: Path, tmp_path: Path) -> None:
    player = make_player(tiny_lm_dir, tmp_path)
    # Random prompts: a random model's greedy continuations of the chat prompts coincide.
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 384, (length,), generator=generator).tolist() for length in (4, 9, 15)]
    unstopped = player.generate_from_ids(prompts, sample=False)
    stop_token = token_unique_to_one_row([g.token_ids for g in unstopped])
    player.base.model.generation_config.eos_token_id = stop_token

    stopped = player.generate_from_ids(prompts, sample=False)

    for before, after in zip(unstopped, stopped):
        if stop_token in before.token_ids:
            end = before.token_ids.index(stop_token) + 1
            assert after.token_ids == before.token_ids[:end]  # the EOS is kept, nothing after it
        else:
            assert after.token_ids == before.token_ids
        assert after.logprobs == pytest.approx(before.logprobs[: len(after.logprobs)], abs=1e-5)
    assert sum(g.token_ids[-1] == stop_token for g in stopped) == 1
    assert len({len(g.token_ids) for g in stopped}) > 1


def test_greedy_picks_the_argmax_and_a_tiny_top_p_is_greedy(tiny_lm_dir: Path, tmp_path: Path) -> None:
    player = make_player(tiny_lm_dir, tmp_path, top_p=1e-6)
    prompts = prompts_for(player)
    greedy = player.generate(prompts, sample=False)
    assert [g.token_ids for g in player.generate(prompts, sample=True, seed=0)] == [g.token_ids for g in greedy]
    for generation in greedy:
        with torch.inference_mode(), player.active():
            ids = torch.tensor([generation.prompt_ids + generation.token_ids])
            logits = player.model(input_ids=ids).logits[0]
        predicted = logits[len(generation.prompt_ids) - 1 : -1].argmax(dim=-1).tolist()
        assert predicted == generation.token_ids


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_equal_a_fresh_forward_pass(tiny_lm_dir: Path, tmp_path: Path, temperature: float) -> None:
    """Acceptance: different prompt and response lengths, padding included, to 1e-4."""
    player = make_player(tiny_lm_dir, tmp_path, temperature=temperature, max_new_tokens=8)
    prompts = prompts_for(player)
    # Until a row stops, a seeded run repeats itself, so this token ends one row early.
    unstopped = player.generate(prompts, seed=11)
    player.base.model.generation_config.eos_token_id = token_unique_to_one_row([g.token_ids for g in unstopped])
    generations = player.generate(prompts, seed=11)
    assert len({len(g.prompt_ids) for g in generations}) == len(generations)
    assert len({len(g.token_ids) for g in generations}) > 1

    # Each sequence alone, unpadded.
    for generation in generations:
        expected = forward_logprobs(player, generation.prompt_ids, generation.token_ids)
        assert generation.logprobs == pytest.approx(expected, abs=1e-4)

    # All together, padded and with shared prompts, as a learner sees them.
    learner = PPOLearner(player, learner_settings(temperature=temperature))
    rollouts = [Rollout(g.prompt_ids, g.token_ids, g.logprobs, 0.0, str(row)) for row, g in enumerate(generations)]
    batch = SharedPromptBatch.build(rollouts, player.pad_token_id, player.device)
    with torch.inference_mode(), player.active():
        packed, _ = learner._token_logprobs(predicting_hidden_states(player, batch), batch, with_entropy=False)
    for row, generation in enumerate(generations):
        length = len(generation.token_ids)
        assert batch.response_mask[row].sum() == length
        assert packed[row, :length].tolist() == pytest.approx(generation.logprobs, abs=1e-4)


def test_top_p_draws_only_from_the_nucleus_but_records_full_logprobs(tiny_lm_dir: Path, tmp_path: Path) -> None:
    top_p = 0.5
    player = make_player(tiny_lm_dir, tmp_path, top_p=top_p, temperature=1.5)
    for generation in player.generate(prompts_for(player), seed=5):
        assert generation.logprobs == pytest.approx(
            forward_logprobs(player, generation.prompt_ids, generation.token_ids), abs=1e-4
        )
        with torch.inference_mode(), player.active():
            ids = torch.tensor([generation.prompt_ids + generation.token_ids])
            logits = player.model(input_ids=ids).logits[0, len(generation.prompt_ids) - 1 : -1] / 1.5
        probabilities = torch.softmax(logits.float(), dim=-1)
        for step, token in enumerate(generation.token_ids):
            mass_before = float(probabilities[step][probabilities[step] > probabilities[step, token]].sum())
            assert mass_before < top_p


def test_a_tokenizer_without_chat_template_gets_plain_turns(tiny_lm_dir: Path, tmp_path: Path) -> None:
    player = make_player(tiny_lm_dir, tmp_path)
    player.tokenizer.chat_template = None
    prompt = player.render_prompt([{"role": "user", "content": "Who ran?"}])
    assert prompt == "user: Who ran?\n\nassistant:"
    [generation] = player.generate([prompt], seed=0)
    assert generation.prompt_ids == player.tokenizer(prompt)["input_ids"]
    assert len(generation.token_ids) == 10


def test_response_prefix_ends_the_prompt_and_starts_the_text_but_is_not_generated(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    plain = make_player(tiny_lm_dir, tmp_path)
    prefixed = make_player(tiny_lm_dir, tmp_path / "prefixed", response_prefix="Verdict:")
    messages = policy_messages(STORIES[0], "Who ran?", ["the fox", "the farmer"])
    prompt = prefixed.render_prompt(messages)
    assert prompt == plain.render_prompt(messages) + "Verdict:"

    (generation,) = prefixed.generate([prompt], seed=3)
    generated = prefixed.tokenizer.decode(
        [token for token in generation.token_ids if token not in prefixed.eos_token_ids],
        skip_special_tokens=True,
    )
    assert generation.text == ("Verdict:" + generated).strip()
    # The prefix is prompt, not response: the learner must not be trained on it.
    assert generation.prompt_ids == prefixed.encode_prompt(prompt)
    assert len(generation.token_ids) == len(generation.logprobs) >= 1


def test_shared_prompts_are_prefilled_once_and_generate_as_if_unshared(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Duplicated prompts mixed with distinct ones: one prefill row per distinct prompt, and
    the same tokens and log-probs as the unshared loop (the draws run over the same batch).
    (The stories are the whole prompts here, so no two distinct ones share a prefix; chat
    prompts that do are the next test's.)"""
    player = make_player(tiny_lm_dir, tmp_path, max_new_tokens=8)
    a, b, c = (player.encode_prompt(story) for story in STORIES)
    prompt_ids = [a, b, a, c, a, b]
    prefill_rows: list[int] = []

    def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].shape[1] > 1:  # a prefill, not a one-token decode step
            prefill_rows.append(args[0].shape[0])

    hook = player.model.get_base_model().get_input_embeddings().register_forward_pre_hook(record)
    try:
        shared = player.generate_from_ids(prompt_ids, seed=7)
        player._share_prompts = False
        unshared = player.generate_from_ids(prompt_ids, seed=7)
    finally:
        hook.remove()
        del player._share_prompts
    assert prefill_rows == [3, 6]

    assert [g.token_ids for g in shared] == [g.token_ids for g in unshared]
    # Rows that share a prompt still draw their own samples.
    assert len({tuple(shared[row].token_ids) for row in (0, 2, 4)}) > 1
    for with_sharing, without in zip(shared, unshared):
        assert with_sharing.prompt_ids == without.prompt_ids
        assert with_sharing.logprobs == pytest.approx(without.logprobs, abs=1e-5)
        assert with_sharing.logprobs == pytest.approx(
            forward_logprobs(player, with_sharing.prompt_ids, with_sharing.token_ids), abs=1e-4
        )

    # An EOS that stops one of the sharing rows early leaves the others as they were.
    player.base.model.generation_config.eos_token_id = token_unique_to_one_row([g.token_ids for g in shared])
    stopped = player.generate_from_ids(prompt_ids, seed=7)
    assert len({len(g.token_ids) for g in stopped}) > 1
    for generation in stopped:
        assert generation.logprobs == pytest.approx(
            forward_logprobs(player, generation.prompt_ids, generation.token_ids), abs=1e-4
        )


def test_prompts_sharing_a_prefix_prefill_it_once_and_generate_as_if_unshared(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The monitor's case: distinct prompts that differ only at the end (the answer judged),
    one of them twice, beside an unrelated prompt. The shared prefix runs once, then each
    row's tail on its cache; tokens and log-probs are those of the unshared prefill, through
    the player's decode steps and through transformers' own loop."""
    player = make_player(tiny_lm_dir, tmp_path, max_new_tokens=8)
    story = " ".join(STORIES)

    def judged(answer: str) -> list[int]:
        return player.encode_prompt(player.render_prompt(policy_messages(story, "Who ran?", ["the fox", "the farmer"]) + [
            {"role": "assistant", "content": answer}, {"role": "user", "content": "Is that answer right?"}]))

    prompt_ids = [judged("The fox ran."), judged("The farmer ran, I think."), judged("The fox ran."), player.encode_prompt(prompts_for(player)[0])]
    common = next(i for i, (x, y) in enumerate(zip(prompt_ids[0], prompt_ids[1])) if x != y)
    assert common >= 32  # long enough to be shared (players/packing.py MIN_PREFIX_GAIN_TOKENS)
    prefill_rows: list[tuple[int, int]] = []

    def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].shape[1] > 1:  # a prefill, not a one-token decode step
            prefill_rows.append(tuple(args[0].shape))

    hook = player.model.get_base_model().get_input_embeddings().register_forward_pre_hook(record)
    try:
        shared = player.generate_from_ids(prompt_ids, seed=11)
        player._fast_decode = False
        shared_generic = player.generate_from_ids(prompt_ids, seed=11)
        del player._fast_decode
        player._share_prompts = False
        unshared = player.generate_from_ids(prompt_ids, seed=11)
    finally:
        hook.remove()
        player.__dict__.pop("_share_prompts", None)
        player.__dict__.pop("_fast_decode", None)
    # Two prefixes (the judged story's, the other prompt's minus its last token), then a tail
    # per row; unshared, one prefill of all four prompts.
    longest = max(len(ids) for ids in prompt_ids)
    assert [rows for rows, _ in prefill_rows] == [2, 4, 2, 4, 4]
    assert prefill_rows[0][1] == max(common, len(prompt_ids[3]) - 1) and prefill_rows[4] == (4, longest)
    assert prefill_rows[1][1] <= longest - common
    for with_sharing, generic, without in zip(shared, shared_generic, unshared, strict=True):
        assert with_sharing.token_ids == generic.token_ids == without.token_ids
        assert with_sharing.logprobs == pytest.approx(without.logprobs, abs=1e-5)
        assert generic.logprobs == pytest.approx(without.logprobs, abs=1e-5)
        assert with_sharing.logprobs == pytest.approx(
            forward_logprobs(player, with_sharing.prompt_ids, with_sharing.token_ids), abs=1e-4
        )


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def intra_op_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Torch's intra-op threads for one test (the suite runs on 1); at 2 the decoder computes
    the vocabulary projection weight-major."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_fast_decode_steps_match_the_models_own_forward(tiny_lm_dir: Path, tmp_path: Path, intra_op_threads: int) -> None:
    """players/sampler.py's decode steps against transformers' forward with its cache: same
    tokens and log-probs, with a trained-looking adapter, shared and distinct prompts, padding,
    and rows stopping at different steps; on 1 and 2 threads."""
    from players.sampler import LlamaDecoder

    player = make_player(tiny_lm_dir, tmp_path, max_new_tokens=12, temperature=0.8)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in player.model.named_parameters():
            if "lora_" in name:  # LoRA B starts at zero, which would hide the adapter's term
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    assert LlamaDecoder.prepare(player.model) is not None
    a, b, c = (player.encode_prompt(prompt) for prompt in prompts_for(player))
    eos = player.base.model.generation_config.eos_token_id

    x, y, z = (player.encode_prompt(story) for story in STORIES)
    # Chat prompts sharing the template's long opening (a prefix prefilled once, then a tail
    # per row: the decoder reads one prompt per row), twice with repeats; then rows sharing
    # whole prompts with nothing else in common (one copy of each prompt's keys).
    for prompt_ids in ([a, b, a, c, a, b], [a, b, c], [x, y, x, z, x, y]):
        player.base.model.generation_config.eos_token_id = eos
        fast, reference = fast_and_reference(player, prompt_ids, seed=5)
        player.base.model.generation_config.eos_token_id = token_unique_to_one_row([g.token_ids for g in reference])
        stopped_fast, stopped_reference = fast_and_reference(player, prompt_ids, seed=5)
        assert len({len(g.token_ids) for g in stopped_reference}) > 1
        for ours, theirs in zip(fast + stopped_fast, reference + stopped_reference, strict=True):
            assert ours.token_ids == theirs.token_ids
            assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-5)


def fast_and_reference(player: Player, prompt_ids: list[list[int]], seed: int) -> tuple[list, list]:
    """The same generation by the player's own decode loop and by transformers' (the reference)."""
    fast = player.generate_from_ids(prompt_ids, seed=seed)
    player._fast_decode = False
    try:
        reference = player.generate_from_ids(prompt_ids, seed=seed)
    finally:
        del player._fast_decode
    return fast, reference


def test_fast_decode_steps_apply_the_generating_players_own_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Two players on one base: each generates with its own adapter, as the model's forward does."""
    pool = ModelPool(cache_dir=tmp_path)
    config = PlayerConfig(model=str(tiny_lm_dir), max_new_tokens=8)
    policy, monitor = Player.create(pool, "policy", config), Player.create(pool, "monitor", config)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    prompts = [policy.encode_prompt(prompt) for prompt in prompts_for(policy)]
    for player in (policy, monitor):
        fast, reference = fast_and_reference(player, prompts, seed=9)
        for ours, theirs in zip(fast, reference, strict=True):
            assert ours.token_ids == theirs.token_ids
            # two fp32 kernels summing in different orders: ~1e-6 relative, at log-probs near -7
            assert ours.logprobs == pytest.approx(theirs.logprobs, rel=2e-6, abs=1e-5)
    assert policy.generate_from_ids(prompts, seed=9)[0].logprobs != monitor.generate_from_ids(prompts, seed=9)[0].logprobs


def test_draws_follow_the_distribution_and_never_pick_a_token_of_zero_mass() -> None:
    """The inverse-CDF draw against the frequencies it must produce: 20,000 rows of one
    distribution, each frequency within 5 standard errors of its probability."""
    probabilities = torch.tensor([0.5, 0.25, 0.0, 0.15, 0.1])
    rows = 20_000
    logprobs = probabilities.log().expand(rows, -1)

    chosen = _draw(logprobs, 1.0, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(chosen, minlength=5).double() / rows
    tolerance = 5 * (probabilities * (1 - probabilities) / rows).sqrt() + 1e-12
    assert bool(((frequencies - probabilities.double()).abs() <= tolerance).all()), frequencies
    assert frequencies[2] == 0.0
    assert torch.equal(chosen, _draw(logprobs, 1.0, torch.Generator().manual_seed(0)))  # seeded

    # top_p 0.6 keeps the tokens whose mass before them is below 0.6: the first two, renormalised.
    nucleus = torch.bincount(_draw(logprobs, 0.6, torch.Generator().manual_seed(1)), minlength=5).double() / rows
    assert nucleus[2:].sum() == 0.0
    assert abs(float(nucleus[0]) - 2 / 3) < 5 * (2 / 9 / rows) ** 0.5


def test_a_draw_reaches_the_last_token_of_a_large_vocabulary() -> None:
    """The running mass is float64: a token behind 49,151 tiny ones keeps its exact share."""
    vocabulary = 49_152
    probabilities = torch.full((vocabulary,), 0.5 / (vocabulary - 1))
    probabilities[-1] = 0.5
    rows = 256
    chosen = _draw(probabilities.log().expand(rows, -1), 1.0, torch.Generator().manual_seed(2))
    share = float((chosen == vocabulary - 1).double().mean())
    assert abs(share - 0.5) < 5 * (0.25 / rows) ** 0.5
    assert bool((chosen < vocabulary).all())
