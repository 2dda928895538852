import pytest
import torch
from torch import nn

from tvutils.editing import variants
from tvutils.editing.task_vector import TaskVector, merge


def pair(seed: int = 0):
    torch.manual_seed(seed)
    base, tuned = nn.Linear(6, 4), nn.Linear(6, 4)
    return base, tuned


def test_base_plus_task_vector_gives_back_the_fine_tuned_model():
    base, tuned = pair()
    tv = TaskVector.from_models(base, tuned)
    rebuilt = tv.apply_to(base)
    for key, value in tuned.state_dict().items():
        assert torch.allclose(rebuilt.state_dict()[key], value, atol=1e-7)
    sd = tv.apply_to(base.state_dict())
    assert isinstance(sd, dict) and torch.allclose(sd["weight"], tuned.weight)


def test_algebra():
    base, t1 = pair(0)
    _, t2 = pair(1)
    a, b = TaskVector.from_models(base, t1), TaskVector.from_models(base, t2)
    assert torch.allclose((a + b).deltas["weight"], a.deltas["weight"] + b.deltas["weight"])
    assert torch.allclose((a - b).deltas["bias"], a.deltas["bias"] - b.deltas["bias"])
    assert torch.allclose((-a).deltas["weight"], -a.deltas["weight"])
    assert torch.allclose((2.5 * a).deltas["weight"], (a * 2.5).deltas["weight"])
    assert (a + b).norm() == pytest.approx(float((a + b).flatten().norm()))
    assert a.cosine(a) == pytest.approx(1.0)
    assert a.cosine(-a) == pytest.approx(-1.0)
    merged = merge(base, [a, b], [1.0, -0.5])
    assert torch.allclose(merged.weight, base.weight + a.deltas["weight"] - 0.5 * b.deltas["weight"])


def test_mismatched_state_dicts_raise_naming_the_key():
    base = {"w": torch.zeros(3, 3), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match="only in the first"):
        TaskVector.from_models(base, {"w": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="'w': shape"):
        TaskVector.from_models(base, {"w": torch.zeros(3, 4), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="'b': dtype"):
        TaskVector.from_models(base, {"w": torch.zeros(3, 3), "b": torch.zeros(3, dtype=torch.float64)})
    tv = TaskVector.from_models(base, {"w": torch.ones(3, 3), "b": torch.ones(3)})
    other = TaskVector({"w": torch.ones(3, 3)})
    with pytest.raises(ValueError, match="different keys"):
        tv + other
    with pytest.raises(ValueError, match="not in the base"):
        tv.apply_to({"w": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="differs"):
        TaskVector.from_models({"i": torch.tensor([1])}, {"i": torch.tensor([2])})


def test_integer_buffers_are_frozen_not_skipped_silently():
    base = {"w": torch.zeros(2, 2), "ids": torch.arange(3)}
    tv = TaskVector.from_models(base, {"w": torch.ones(2, 2), "ids": torch.arange(3)})
    assert tv.keys() == ["w"] and tv.frozen == ("ids",)
    assert torch.equal(tv.apply_to(base)["ids"], torch.arange(3))


def test_task_vector_on_a_transformers_vit():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    torch.manual_seed(0)
    base = transformers.ViTForImageClassification(cfg).eval()
    tuned = transformers.ViTForImageClassification(cfg).eval()
    tv = TaskVector.from_models(base, tuned)
    assert set(tv.keys()) == set(base.state_dict())
    rebuilt = tv.apply_to(base)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(rebuilt(pixel_values=x).logits, tuned(pixel_values=x).logits, atol=1e-5)
    low = variants.low_rank(tv, 1)
    assert (
        torch.linalg.matrix_rank(low.deltas["vit.embeddings.patch_embeddings.projection.weight"].reshape(16, -1)) == 1
    )
