"""Scoring passages: continuations, Rouge-L, NLL, α̂ (tvutils.language.generation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.language import generation


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
