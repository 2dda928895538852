import pytest
import torch

from tvutils.icl.model import ICLTransformer, LearnerConfig, hinge_loss, loss_and_error


def plain_loop_F(model: ICLTransformer, P: torch.Tensor) -> torch.Tensor:
    """Eq. (1) with explicit loops over prompts and context columns i."""
    WQ, WK, WV, WO, a = (t.detach() for t in (model.W_Q, model.W_K, model.W_V, model.W_O, model.a))
    out = torch.zeros(P.shape[0])
    for b in range(P.shape[0]):
        cols, query = P[b, :-1], P[b, -1]
        scores = torch.stack([(WK @ p) @ (WQ @ query) for p in cols])
        attn = torch.exp(scores - scores.max())
        attn = attn / attn.sum()
        inner = sum(WV @ p * attn[i] for i, p in enumerate(cols))
        out[b] = a @ torch.relu(WO @ inner)
    return out


def test_learner_matches_a_plain_loop():
    model = ICLTransformer(LearnerConfig(D=7, m=6, qk_init=0.3, o_init=0.5), seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for w in (model.W_Q, model.W_K, model.W_V):
            w.copy_(torch.randn(7, 7, generator=g))
    P = torch.randn(5, 9, 7, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model(P), plain_loop_F(model, P), atol=1e-5)
    attn = model.attention(P)
    assert attn.shape == (5, 8) and torch.allclose(attn.sum(1), torch.ones(5))


def test_initialisation_follows_the_paper():
    cfg = LearnerConfig(D=6, m=10, qk_init=0.1, v_init=1.0, o_init=0.01)
    model = ICLTransformer(cfg, seed=0)
    assert torch.equal(model.W_Q.detach(), 0.1 * torch.eye(6)) and torch.equal(model.W_K.detach(), 0.1 * torch.eye(6))
    assert torch.equal(model.W_V.detach(), torch.eye(6))
    assert torch.allclose(model.a.abs(), torch.full((10,), 10**-0.5)) and float(model.a.sum()) == pytest.approx(
        0, abs=1e-6
    )
    assert set(n for n, _ in model.named_parameters()) == {"W_Q", "W_K", "W_V", "W_O"}
    assert torch.equal(ICLTransformer(cfg, seed=3).W_O, ICLTransformer(cfg, seed=3).W_O)


def test_shape_errors_and_losses():
    model = ICLTransformer(LearnerConfig(D=6, m=4))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="even"):
        LearnerConfig(m=3)
    assert torch.equal(hinge_loss(torch.tensor([2.0, 0.5, -1.0]), torch.ones(3)), torch.tensor([0.0, 0.5, 2.0]))
    loss, err = loss_and_error(torch.tensor([2.0, -0.5]), torch.tensor([1.0, 1.0]))
    assert loss == pytest.approx(0.75) and err == pytest.approx(0.5)
