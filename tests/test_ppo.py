"""PPO loss terms against hand computations (engine/ppo.py, details 1, 2, 4, 7)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import TrainingConfig
from engine.ppo import clipped_surrogate, explained_variance, k2_kl, k3_kl, masked_mean


def test_clipped_surrogate_by_hand() -> None:
    # ratio 1.5 and 0.5 against advantages +1 and −1, ε = 0.2
    new = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)], dtype=torch.float64)
    behaviour = torch.zeros(4, dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    loss, ratio = clipped_surrogate(new, behaviour, advantages, clip_range=0.2)
    assert ratio.tolist() == pytest.approx([1.5, 1.5, 0.5, 0.5])
    # max(−A·r, −A·clip(r)):  A>0,r>1+ε -> −1.2 (clipped);  A<0,r>1+ε -> 1.5 (unclipped, pessimistic)
    #                         A>0,r<1−ε -> −0.5 (unclipped); A<0,r<1−ε -> 0.8 (clipped)
    assert loss.tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])


def test_clipped_surrogate_gradient_vanishes_only_where_clipped() -> None:
    new = torch.tensor([math.log(1.5), math.log(1.1)], dtype=torch.float64, requires_grad=True)
    loss, _ = clipped_surrogate(new, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), 0.2)
    loss.sum().backward()
    assert new.grad is not None
    # d(−r)/d log r = −r inside the trust region, 0 beyond it
    assert new.grad.tolist() == pytest.approx([0.0, -1.1])


def test_k3_kl_by_hand() -> None:
    new = torch.tensor([math.log(0.5)], dtype=torch.float64)
    reference = torch.tensor([math.log(0.25)], dtype=torch.float64)
    # log(ref/new) = log 0.5: k3 = 0.5 − log 0.5 − 1
    assert k3_kl(new, reference).item() == pytest.approx(0.5 - math.log(0.5) - 1.0, abs=1e-12)
    assert k3_kl(reference, reference).item() == 0.0


def test_k3_expectation_is_the_exact_kl() -> None:
    # On a 3-symbol distribution, E_π[k3] over every symbol equals KL(π ‖ π_ref) exactly.
    policy = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    reference = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = float((policy * (policy / reference).log()).sum())
    expectation = float((policy * k3_kl(policy.log(), reference.log())).sum())
    assert expectation == pytest.approx(exact, abs=1e-12)
    assert (k3_kl(policy.log(), reference.log()) >= 0).all()


# --- which KL the loss's gradient follows (detail 4), exactly, on a five-token vocabulary ---

LOGITS = [0.3, -1.2, 0.8, 0.0, 2.0]
REFERENCE_LOGITS = [1.0, 0.4, -0.5, 0.2, -1.0]


def expected_gradient(estimator: object) -> torch.Tensor:
    """∇θ E_{a~π_θ}[estimator(a)] as a sampled loss sees it: the tokens are drawn from π_θ
    (their probabilities are weights, not differentiated), the estimator is differentiated."""
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    logprobs = torch.log_softmax(logits, dim=0)
    reference = torch.log_softmax(torch.tensor(REFERENCE_LOGITS, dtype=torch.float64), dim=0)
    expectation = (logprobs.exp().detach() * estimator(logprobs, reference)).sum()  # type: ignore[operator]
    (gradient,) = torch.autograd.grad(expectation, logits)
    return gradient


def exact_gradient(direction: str) -> torch.Tensor:
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    logprobs = torch.log_softmax(logits, dim=0)
    reference = torch.log_softmax(torch.tensor(REFERENCE_LOGITS, dtype=torch.float64), dim=0)
    if direction == "policy||reference":
        kl = (logprobs.exp() * (logprobs - reference)).sum()
    else:
        kl = (reference.exp() * (reference - logprobs)).sum()
    (gradient,) = torch.autograd.grad(kl, logits)
    return gradient


def test_the_loss_kl_term_has_the_gradient_of_kl_policy_to_reference() -> None:
    # GAME.md §2 penalises KL(π_θ ‖ π_ref); the loss's k2 term follows exactly that gradient.
    assert torch.allclose(expected_gradient(k2_kl), exact_gradient("policy||reference"), atol=1e-12)


def test_k3_has_the_gradient_of_the_other_kl_direction() -> None:
    # Why k3 only reports the value: its expected gradient is that of KL(π_ref ‖ π_θ).
    assert torch.allclose(expected_gradient(k3_kl), exact_gradient("reference||policy"), atol=1e-12)
    assert not torch.allclose(expected_gradient(k3_kl), exact_gradient("policy||reference"), atol=1e-3)


def test_masked_mean_weighs_every_real_token_equally() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 99.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx(4.0)  # (1 + 2 + 3 + 10) / 4


def test_explained_variance_by_hand() -> None:
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4), target, mask) == pytest.approx(0.0)
    # residual [0.5, −0.5, 0.5, −0.5]: variance 0.25 against 1.25
    predicted = target - torch.tensor([[0.5, -0.5, 0.5, -0.5]])
    assert explained_variance(predicted, target, mask) == pytest.approx(1.0 - 0.25 / 1.25)
    assert math.isnan(explained_variance(target, torch.ones(1, 4), mask))


def test_the_config_rejects_impossible_ppo_settings() -> None:
    # PPOSettings is built from the validated [training] table, which holds the range checks.
    with pytest.raises(ValueError, match="advantage"):
        TrainingConfig(advantage="vtrace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_range"):
        TrainingConfig(clip_range=1.5)
