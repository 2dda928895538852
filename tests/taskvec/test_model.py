import pytest
import torch

from tvutils.taskvec.model import LearnerConfig, OneLayerTransformer, hinge_loss


def plain_loop_f(model: OneLayerTransformer, X: torch.Tensor) -> torch.Tensor:
    """Eq. (3) written with explicit loops over samples, queries l and keys s."""
    W, V, a = model.W.detach(), model.V.detach(), model.a
    B, P, _ = X.shape
    out = torch.zeros(B)
    for b in range(B):
        total = 0.0
        for l in range(P):
            scores = torch.stack([X[b, s] @ W @ X[b, l] for s in range(P)])
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            inner = sum(V @ X[b, s] * weights[s] for s in range(P))
            total = total + a[l] @ torch.relu(inner)
        out[b] = total / P
    return out


@pytest.mark.parametrize("per_position", [False, True])
def test_learner_matches_a_plain_loop(per_position):
    cfg = LearnerConfig(d=8, m=6, P=5, w_init=0.3, v_init=0.5, a_per_position=per_position)
    model = OneLayerTransformer(cfg, seed=1)
    with torch.no_grad():
        model.W.copy_(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))
    X = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model(X), plain_loop_f(model, X), atol=1e-5)


def test_a_entries_are_plus_minus_one_over_sqrt_m_and_balanced():
    model = OneLayerTransformer(LearnerConfig(d=8, m=10, P=4), seed=0)
    assert torch.allclose(model.a.abs(), torch.full_like(model.a, 10**-0.5))
    assert float(model.a[0].sum()) == pytest.approx(0.0, abs=1e-6)
    assert set(n for n, _ in model.named_parameters()) == {"W", "V"}


def test_shape_errors_and_hinge():
    model = OneLayerTransformer(LearnerConfig(d=8, m=4, P=3))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="P=4"):
        model(torch.zeros(2, 4, 8))
    assert torch.equal(
        hinge_loss(torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.0, 1.0])), torch.tensor([0.0, 0.5, 2.0])
    )
