"""engine/ppo.py chunked_token_logprobs against the plain formula, log_softmax(h Wᵀ / T)[token]:
the same log-probs, entropies and gradients, over several chunks of rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import ppo
from engine.ppo import chunked_token_logprobs
from players.cpu_linear import route_frozen_linears


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("head", ["frozen", "trainable", "frozen-onednn"])
def test_chunked_log_probs_entropy_and_gradients_equal_the_plain_formula(
    monkeypatch: pytest.MonkeyPatch, temperature: float, head: str
) -> None:
    generator = torch.Generator().manual_seed(0)
    vocabulary, width, rows = 50, 16, 11
    lm_head = nn.Linear(width, vocabulary, bias=True)
    with torch.no_grad():
        lm_head.weight.copy_(torch.randn(vocabulary, width, generator=generator))
        lm_head.bias.copy_(torch.randn(vocabulary, generator=generator))
    if head != "trainable":
        lm_head.requires_grad_(False)
    if head == "frozen-onednn":
        route_frozen_linears(lm_head, "onednn")
    # 4 rows of 50 fp32 logits per chunk: 11 rows run as chunks of 4, 4 and 3.
    monkeypatch.setattr(ppo, "LOGIT_CHUNK_BYTES", 4 * 4 * vocabulary)
    hidden = torch.randn(rows, width, generator=generator, requires_grad=True)
    tokens = torch.randint(0, vocabulary, (rows,), generator=generator)
    upstream = torch.randn(rows, generator=generator)

    logprobs, entropy = chunked_token_logprobs(hidden, lm_head, tokens, temperature, with_entropy=True)
    plain_hidden = hidden.detach().clone().requires_grad_(True)
    all_logprobs = torch.log_softmax(nn.functional.linear(plain_hidden, lm_head.weight, lm_head.bias) / temperature, dim=-1)
    plain = all_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    plain_entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
    torch.testing.assert_close(logprobs, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, plain_entropy.detach(), rtol=1e-5, atol=1e-5)
    assert not entropy.requires_grad

    parameters = [p for p in lm_head.parameters() if p.requires_grad]
    ours = torch.autograd.grad((logprobs * upstream).sum(), [hidden, *parameters])
    reference = torch.autograd.grad((plain * upstream).sum(), [plain_hidden, *parameters])
    assert len(ours) == (3 if head == "trainable" else 1)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    # Without the entropy asked for, it is not computed (NaN), and the log-probs are unchanged.
    again, no_entropy = chunked_token_logprobs(hidden, lm_head, tokens, temperature)
    assert torch.equal(again, logprobs) and bool(no_entropy.isnan().all())
