"""players/cpu_attention.py: grouped-query attention on the CPU without per-head key/value copies.

The tiny Llama shares each key/value head between two query heads, as SmolLM2 does (3 between 9).
Against transformers' own "sdpa" attention on the same model: the same logits and the same
gradients, with and without padding masks (the masked case is the one that changes: "sdpa"
copies keys and values per query head there), and through a shared-prefix continuation, the
learner's pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations import sdpa_attention
from transformers.integrations.sdpa_attention import repeat_kv

from players import ModelPool
from players.cpu_attention import CPU_ATTENTION, route_cpu_attention
from players.packing import left_pad


def tiny_model(tiny_lm_dir: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32, attn_implementation="sdpa")
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped heads, as in SmolLM2
    return model.eval()


def logits_and_gradients(model: torch.nn.Module, prompts: list[list[int]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of a left-padded batch and the gradients of a loss on them w.r.t. every weight."""
    model.zero_grad()
    input_ids, attention_mask, position_ids = left_pad(prompts, 0, torch.device("cpu"))
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    (logits * attention_mask.unsqueeze(2)).square().mean().backward()
    return logits.detach(), {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("padded", [True, False], ids=["padding-mask", "no-mask"])
def test_routed_attention_gives_the_same_logits_and_gradients_as_transformers_sdpa(
    tiny_lm_dir: Path, padded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = [11, 7, 15] if padded else [15, 15]
    prompts = [torch.randint(5, 200, (length,), generator=generator).tolist() for length in lengths]
    model = tiny_model(tiny_lm_dir)
    copies: list[int] = []  # transformers' per-query-head copies of the key/value heads

    def counted_repeat_kv(hidden: torch.Tensor, repeats: int) -> torch.Tensor:
        copies.append(repeats)
        return repeat_kv(hidden, repeats)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counted_repeat_kv)
    expected_logits, expected_gradients = logits_and_gradients(model, prompts)
    assert bool(copies) == padded  # "sdpa" copies under a mask, and only then

    copies.clear()
    assert route_cpu_attention(model)
    assert model.config._attn_implementation == CPU_ATTENTION
    logits, gradients = logits_and_gradients(model, prompts)
    assert not copies
    assert torch.equal(logits, expected_logits)  # the same kernel on the same numbers
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_continuation_on_a_shared_prefix_cache_attends_as_transformers_sdpa_does(tiny_lm_dir: Path) -> None:
    """The learner's pass: a prefix encoded once, its cache expanded to each rollout, and each
    rollout's tokens (right-padded) attending over prefix and itself under a mask."""
    model = tiny_model(tiny_lm_dir)
    prefix = torch.arange(20, 40).unsqueeze(0)
    continuation = torch.tensor([[50, 51, 52, 53], [60, 61, 0, 0], [70, 71, 72, 0]])
    continuation_mask = (continuation != 0).long()

    def continued_logits() -> torch.Tensor:
        with torch.no_grad():
            cache = model(input_ids=prefix, use_cache=True).cache
            cache.batch_select_indices(torch.zeros(3, dtype=torch.long))
            mask = torch.cat([torch.ones(3, prefix.shape[1], dtype=torch.long), continuation_mask], dim=1)
            positions = torch.arange(prefix.shape[1], prefix.shape[1] + continuation.shape[1]).expand(3, -1)
            return model(input_ids=continuation, attention_mask=mask, position_ids=positions, cache=cache).logits

    expected = continued_logits()
    route_cpu_attention(model)
    assert torch.equal(continued_logits(), expected)


def test_the_model_pool_routes_cpu_bases_and_a_second_route_is_a_no_op(tiny_lm_dir: Path, tmp_path: Path) -> None:
    base = ModelPool(cache_dir=tmp_path).causal_lm(str(tiny_lm_dir), "cpu", torch.float32)
    assert base.model.config._attn_implementation == CPU_ATTENTION
    assert not route_cpu_attention(base.model)  # only models on transformers' "sdpa" are switched
    eager = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32, attn_implementation="eager")
    assert not route_cpu_attention(eager) and eager.config._attn_implementation == "eager"
