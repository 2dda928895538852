"""Fast tests of the vision case study's data and model code (tiny ViTs, tiny stand-in files)."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from tvutils.editing.inplace import InPlaceMerge
from tvutils.editing.similarity import output_alpha
from tvutils.editing.task_vector import TaskVector
from tvutils.vision import data as vd
from tvutils.vision import evaluation as ve
from tvutils.vision import model as vm
from tvutils.vision import training as vt

TINY = vm.ViTSpec(image_size=8, patch_size=4, hidden_size=16, layers=1, heads=2, mlp_size=16)


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


# ---- data ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1, 3], dtype=np.uint8)
    write_idx(tmp_path / "img", images, gz)
    write_idx(tmp_path / "lab", labels, gz)
    assert np.array_equal(vd.read_idx(tmp_path / "img"), images)
    assert np.array_equal(vd.read_idx(tmp_path / "lab"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        vd.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 2), dtype=np.uint8), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        vd.read_idx(tmp_path / "short")


def test_full_mnist_path_on_a_tiny_stand_in(tmp_path):
    """The 70k loader's code (checksums, IDX reading, concatenation) on tiny files written here."""
    rng = np.random.default_rng(0)
    sums = {}
    for split, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    for path in tmp_path.iterdir():
        sums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    # every file present with the right sum: nothing is fetched (the mirror is unreachable on purpose)
    assert vd.download_mnist(tmp_path, mirrors=("http://127.0.0.1:9/",), checksums=sums, timeout=1) == tmp_path
    images, digits = vd.load_mnist_full(tmp_path, download=False)
    assert images.shape == (8, 28, 28) and digits.shape == (8,) and digits.dtype == np.int64
    # a wrong checksum forces a download, which fails offline with a message that says what to do
    with pytest.raises(RuntimeError, match="mnist5k"):
        vd.download_mnist(
            tmp_path,
            mirrors=("http://127.0.0.1:9/",),
            checksums={**sums, "train-images-idx3-ubyte.gz": "0" * 64},
            timeout=1,
        )
    assert set(vd.MNIST_SHA256) == {p.name for p in tmp_path.iterdir()}


def test_mnist_5k_offline():
    images, digits = vd.load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(digits).tolist() == [500] * 10


def test_task_colouring_follows_its_probabilities():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (4000, 28, 28)).astype(np.uint8)
    digits = rng.integers(0, 10, 4000)
    data = vd.make_task_data(images, digits, vd.ColourTask("T", p_colour=0.9, p_parity=0.7, seed=3))
    assert data.x.shape == (4000, 3, 28, 28) and 0 <= float(data.x.min()) and float(data.x.max()) <= 1
    # each digit lies in exactly its colour's channel; blue is empty
    assert torch.equal(data.x[torch.arange(4000), data.colour] > 0, torch.ones(4000, 28, 28, dtype=torch.bool))
    assert float(data.x[:, 2].abs().sum()) == 0
    assert abs(float((data.colour == data.y).double().mean()) - 0.9) < 0.02
    assert abs(float((data.y == torch.from_numpy(digits % 2)).double().mean()) - 0.7) < 0.03
    again = vd.make_task_data(images, digits, vd.ColourTask("T", p_colour=0.9, p_parity=0.7, seed=3))
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)
    with pytest.raises(ValueError):
        vd.ColourTask("bad", p_colour=1.5)


def test_split_and_tint():
    train, test = vd.split_indices(10, 3, seed=1)
    assert len(train) == 7 and len(test) == 3 and not set(train) & set(test)
    tinted = vd.random_tint(np.full((5, 4, 4), 255, np.uint8), seed=0)
    assert tinted.shape == (5, 3, 4, 4) and torch.allclose(tinted.amax(dim=(1, 2, 3)), torch.ones(5))


def test_fashion_mnist_from_a_folder(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.ones((2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 9]))
    images, classes = vd.load_fashion_mnist("test", tmp_path)
    assert images.shape == (2, 28, 28) and classes.tolist() == [3, 9]


# ---- model --------------------------------------------------------------------------------------------------
def test_binary_head_keeps_the_encoder():
    pre = vm.make_vit(TINY, num_labels=10, seed=0)
    a, b = vm.with_binary_head(pre, seed=1), vm.with_binary_head(pre, seed=1)
    assert a.classifier.out_features == 2
    for key, value in pre.state_dict().items():
        if key.startswith("vit."):
            assert torch.equal(a.state_dict()[key], value)
    assert torch.equal(a.classifier.weight, b.classifier.weight)  # the head is seeded


def test_hub_loader_on_a_tiny_saved_model(tmp_path):
    """The hub path's loader, on a tiny model saved in the Hugging Face layout (safetensors)."""
    pre = vm.make_vit(vm.ViTSpec(image_size=16, patch_size=8, hidden_size=16, layers=1, heads=2, mlp_size=16), 5, 0)
    pre.save_pretrained(tmp_path)
    loaded = vm.load_pretrained_dir(tmp_path)
    x = torch.rand(3, 3, 28, 28)  # 28 px digits are resized to the model's 16 px
    assert torch.allclose(ve.logits(loaded, x), ve.logits(pre, x), atol=1e-6)
    assert ve.margins(vm.with_binary_head(loaded, seed=0), x).shape == (3,)


def test_pretraining_is_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    fake = {
        split: (rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n))
        for split, n in (("train", 64), ("test", 32))
    }
    monkeypatch.setattr(vt, "load_fashion_mnist", lambda split: fake[split])
    recipe = vt.PretrainRecipe(
        spec=vm.ViTSpec(image_size=28, patch_size=14, hidden_size=16, layers=1, heads=2, mlp_size=16),
        n_train=64,
        epochs=1,
        batch_size=32,
    )
    first, info = vt.pretrained_vit(recipe, tmp_path)
    assert not info["cached"] and (tmp_path / f"{recipe.key()}.safetensors").is_file()
    second, info2 = vt.pretrained_vit(recipe, tmp_path)
    assert info2["cached"] and info2["fashion_test_accuracy"] == info["fashion_test_accuracy"]
    for (k, v), (_, w) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(v, w), k
    assert vt.PretrainRecipe(epochs=2).key() != vt.PretrainRecipe().key()


def test_fine_tune_merge_and_alpha():
    base = vm.with_binary_head(vm.make_vit(TINY, 10, 0), seed=0)
    x, y = torch.rand(64, 3, 28, 28), torch.randint(0, 2, (64,))
    tuned = vt.fine_tune_vit(base, x, y, vt.FineTuneRecipe(epochs=1, batch_size=32))
    assert torch.equal(tuned.classifier.weight, base.classifier.weight)  # the head is frozen by default
    tv = TaskVector.from_models(base, tuned, include=vm.encoder_keys)
    assert not any(k.startswith("classifier.") for k in tv.keys())
    before = ve.margins(base, x)
    with InPlaceMerge(base, [tv, tv]) as merger:
        sweep = ve.sweep_margins(merger, [(1.0, 0.0), (0.5, 0.5), (0.0, 0.0)], x)
    assert torch.allclose(sweep[0], ve.margins(tuned, x), atol=1e-5)
    assert torch.allclose(sweep[1], ve.margins(tuned, x), atol=1e-5)
    assert torch.allclose(sweep[2], before, atol=1e-6)
    assert torch.equal(ve.margins(base, x), before)  # base restored
    assert ve.accuracy(torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1, 0, 0])) == pytest.approx(200 / 3)
    change = ve.margins(tuned, x) - ve.margins(base, x)
    assert float(output_alpha(change, change, dim=0)) == pytest.approx(1.0)
    assert float(output_alpha(change, -change, dim=0)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="undefined"):
        output_alpha(change, 0 * change, dim=0)
    blocks = vm.blockwise_cosine(tv, tv)
    assert set(blocks) <= {"embeddings", "attention", "MLP", "layer norms"}
    assert sum(share for _, share in blocks.values()) == pytest.approx(1.0)


def test_lambda_selection_rules():
    lambdas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    acc1 = np.array([80.0, 94.5, 95.0, 94.0, 90.0])
    acc2 = np.array([10.0, 40.0, 60.0, 80.0, 85.0])
    assert ve.choose_lambda("multi-task", acc1, acc2, lambdas, 95.0) == 4  # mean 87.5
    # unlearning: λ = −1 forgets most but costs T1 15 points; −0.5 is within the 1-point tolerance
    assert ve.choose_lambda("unlearning", acc1, acc2, lambdas, 95.0, tolerance=1.0) == 1
    assert ve.select_unlearning(acc1, np.array([5.0, 5.0, 5.0, 1.0, 1.0]), lambdas, 95.0) == 2  # tie → nearest 0
    with pytest.raises(ValueError):
        ve.choose_lambda("other", acc1, acc2, lambdas, 95.0)
    sweep = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    y = torch.tensor([1, 0, 0, 0])
    assert ve.accuracy_rows(sweep, y).tolist() == [75.0, 75.0]
    first, second = ve.half_masks(4, seed=0)
    assert int(first.sum()) == 2 and not bool((first & second).any())
    assert ve.accuracy_rows(sweep, y, first).shape == (2,)
    assert vm.block_of("vit.layers.0.mlp.fc1.weight") == "MLP" and vm.block_of("vit.layernorm.bias") == "layer norms"
    assert vm.block_of("vit.encoder.layer.0.intermediate.dense.weight") == "MLP"
