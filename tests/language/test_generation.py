"""Scoring passages: continuations, Rouge-L, NLL, α̂ (tvutils.language.generation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.language import generation
from tvutils.language import models as lmodels


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


def test_score_passages_on_a_lower_pass_equals_the_whole_model(tiny, windows):
    """The fast path (lower blocks once, top blocks per model) gives the same continuations and NLL."""
    model, tokenizer = tiny
    plain = generation.score_passages(model, tokenizer, windows, prompt_len=10, batch_size=4)
    lower = lmodels.lower_pass(model, windows, first_top=2, prompt_len=10, batch_size=4)
    fast = generation.score_passages(model, tokenizer, windows, prompt_len=10, batch_size=4, lower=lower)
    assert np.array_equal(plain[0], fast[0]) and np.allclose(plain[1], fast[1], atol=1e-5)
    with pytest.raises(ValueError, match="other windows"):
        generation.score_passages(model, tokenizer, windows, prompt_len=8, batch_size=4, lower=lower)


def test_score_passages_fast_path_on_phi(tiny_phi):
    """The same on Phi (the paper's architecture: partial rotary embeddings, parallel attention and MLP)."""
    model, tokenizer, ids = tiny_phi
    prompts = ids[:, :8]
    by_hand = prompts.clone()
    with torch.no_grad():
        for _ in range(6):
            by_hand = torch.cat([by_hand, model(input_ids=by_hand).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generation.greedy_continuations(model, prompts, n_new=6, batch_size=3), by_hand[:, 8:])
    plain = generation.score_passages(model, tokenizer, ids, prompt_len=8, batch_size=3)
    fast = generation.score_passages(
        model, tokenizer, ids, 8, 3, lower=lmodels.lower_pass(model, ids, first_top=1, prompt_len=8, batch_size=3)
    )
    assert np.array_equal(plain[0], fast[0]) and np.allclose(plain[1], fast[1], atol=1e-5)
