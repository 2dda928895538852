"""LoRA adapters as task vectors in ``python -m tvutils merge``: equal to PEFT's own merge, and refused by name
where they are not plain LoRA.

The reference is PEFT's ``merge_and_unload`` on the same base and adapter, with lora_B multiplied by λ first
(W + s·(λB)·A: PEFT merges at λ = 1 only; the merge computes W + λ·(s·B·A), equal to float32 rounding). Tiny
GPT-2 (Conv1D: ``fan_in_fan_out``) and Llama (Linear; ``use_rslora`` and a ``rank_pattern``) models are made
here with random weights and a random non-zero lora_B.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tvutils.__main__ import main
from tvutils.editing.checkpoint import CheckpointError
from tvutils.editing.streaming import merge_checkpoints

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _gpt2():
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16)
    config.bos_token_id = config.eos_token_id = 0
    return transformers.GPT2LMHeadModel, config, {"target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True}


def _llama():
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=64, max_position_embeddings=16, tie_word_embeddings=False,
    )  # fmt: skip
    lora = {"target_modules": ["q_proj", "v_proj", "down_proj"], "use_rslora": True, "rank_pattern": {"v_proj": 2}}
    return transformers.LlamaForCausalLM, config, lora


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def made(request, tmp_path_factory):
    """(model class, base folder, adapter folder, a full fine-tune folder) for one tiny model."""
    cls, config, lora = {"gpt2": _gpt2, "llama": _llama}[request.param]()
    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(root / "base")  # safetensors
    tuned = cls(config).eval()
    with torch.no_grad():
        for (_, p), (_, q) in zip(tuned.named_parameters(), model.named_parameters()):
            p.copy_(q + 0.01 * torch.randn_like(q))
    tuned.save_pretrained(root / "full")
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, **lora))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # PEFT starts B at 0: a task vector of zero
    adapted.save_pretrained(root / "adapter")
    return cls, root / "base", root / "adapter", root / "full"


def _peft_merged(cls, base, adapter, lam):
    model = peft.PeftModel.from_pretrained(cls.from_pretrained(base), adapter)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(lam)
    return model.merge_and_unload().eval()


@pytest.mark.parametrize("lam", [-1.0, 0.5])
def test_adapter_merge_equals_peft_merge_and_unload(made, tmp_path, lam):
    cls, base, adapter, _ = made
    out = tmp_path / "out"
    assert (
        main(["merge", "--base", str(base), "--finetuned", str(adapter), "--lambdas", str(lam), "--out", str(out)]) == 0
    )
    ours = cls.from_pretrained(out).eval()  # loads with from_pretrained
    theirs = _peft_merged(cls, base, adapter, lam)
    ref, got = theirs.state_dict(), ours.state_dict()
    assert set(ref) == set(got)
    worst = 0.0
    for key, value in ref.items():
        diff = float((got[key] - value).abs().max())
        worst = max(worst, diff / float(value.abs().max().clamp_min(1e-30)))
    print(f"{cls.__name__} λ={lam}: max |ours − PEFT| / max |W| = {worst:.2e} over {len(ref)} tensors")
    assert worst <= 1e-6  # float32 rounding (2⁻²³ ≈ 1.2e-7 per operation)
    w = load_file(base / "model.safetensors")
    changed = {k for k in w if not torch.equal(got[k], w[k])}
    targets = {
        k.removeprefix("base_model.model.").replace(".lora_A", "")
        for k in load_file(adapter / "adapter_model.safetensors")
        if ".lora_A." in k
    }
    assert changed == targets and len(targets) >= 4  # every target module, and nothing else
    ids = torch.arange(12).reshape(1, 12)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)


def test_adapters_and_full_fine_tunes_mix_with_any_lambda(made, tmp_path):
    cls, base, adapter, full = made
    out = merge_checkpoints(base, [adapter, full, adapter], [0.7, -0.4, -0.2], tmp_path / "out")
    merged = load_file(out)
    w, f = load_file(base / "model.safetensors"), load_file(full / "model.safetensors")
    lora = _peft_merged(cls, base, adapter, 1.0).state_dict()
    for key, value in w.items():  # ΔW of the adapter from PEFT, Aᵢ − W of the full fine-tune
        delta = lora[key] - value if key in lora else torch.zeros_like(value)
        torch.testing.assert_close(merged[key], value + 0.5 * delta - 0.4 * (f[key] - value), rtol=0, atol=1e-6)
    ranked = merge_checkpoints(base, [adapter], [1.0], tmp_path / "r", rank=64)  # the exact SVD: the plain merge
    plain = merge_checkpoints(base, [adapter], [1.0], tmp_path / "p")
    for key, value in load_file(plain).items():
        torch.testing.assert_close(load_file(ranked)[key], value, rtol=0, atol=1e-5)


def _edited(tmp_path, adapter, name, config=None, tensors=None):
    folder = tmp_path / name
    shutil.copytree(adapter, folder)
    if config is not None:
        text = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**text, **config}))
    if tensors is not None:
        save_file(tensors(load_file(folder / "adapter_model.safetensors")), folder / "adapter_model.safetensors")
    return folder


def test_adapters_that_are_not_plain_lora_or_not_of_this_base_are_refused(made, tmp_path):
    cls, base, adapter, _ = made
    key = next(k for k in load_file(adapter / "adapter_model.safetensors") if k.endswith("lora_A.weight"))
    module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
    cases = {
        "DoRA": {"config": {"use_dora": True}},
        "modules_to_save": {"config": {"modules_to_save": ["lm_head"]}},
        "LOHA adapter": {"config": {"peft_type": "LOHA"}},
        "alpha_pattern": {"config": {"alpha_pattern": {"q_proj": 32}}},
        "made for a modified base": {"config": {"init_lora_weights": "pissa"}},
        "lora_magnitude_vector": {"tensors": lambda t: {**t, key.replace("lora_A.weight", "lora_magnitude_vector"): torch.ones(3)}},
        f"module '{module}'.*not this adapter's base": {"tensors": lambda t: {**t, key: torch.ones(t[key].shape[0], 3)}},
        "has no tensor": {"tensors": lambda t: {**{k.replace(module, module + "x"): v for k, v in t.items()}}},
    }  # fmt: skip
    for i, (match, edit) in enumerate(cases.items()):
        folder = _edited(tmp_path, adapter, f"a{i}", **edit)
        with pytest.raises(CheckpointError, match=match) as info:
            merge_checkpoints(base, [folder], [1.0], tmp_path / "out")
        assert "\n" not in str(info.value) and not (tmp_path / "out").exists(), match
    with pytest.raises(CheckpointError, match="an adapter"):  # as the base: refused, it is not a whole model
        merge_checkpoints(adapter, [base], [1.0], tmp_path / "out")
    both = _edited(tmp_path, adapter, "both")
    shutil.copy(base / "model.safetensors", both)  # transformers would load the adapter on its base
    for args in ((base, [both]), (both, [adapter])):
        with pytest.raises(CheckpointError, match="both an adapter .* and a checkpoint .*ambiguous"):
            merge_checkpoints(*args, [1.0], tmp_path / "out")
