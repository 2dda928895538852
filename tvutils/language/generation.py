"""Scoring a language model on passages: greedy continuations and their Rouge-L, the next-token loss (NLL) of
the true continuation, the last hidden states, and α̂ between two fine-tunes by output similarity.

With ``inputs`` = ``block_inputs(model, windows, first_top)`` (or a ``LowerPass`` in ``score_passages``) only the
blocks from ``first_top`` on are run (valid when the blocks below are those the inputs were computed with).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ..editing.similarity import output_alpha
from .models import LowerPass, cache_keyword, n_layers, new_cache, top_blocks_only


@torch.no_grad()
def greedy_continuations(model: nn.Module, prompts: torch.Tensor, n_new: int, batch_size: int = 16) -> torch.Tensor:
    """(N, n_new) greedy next tokens after each prompt (N, P); prompts of one length need no padding."""
    key, out = cache_keyword(model), []
    for i in range(0, len(prompts), batch_size):
        cache = new_cache()
        step = model(input_ids=prompts[i : i + batch_size], use_cache=True, logits_to_keep=1, **{key: cache})
        new = [step.logits[:, -1].argmax(-1)]  # only the last position's logits were computed
        out.append(_decode(model, cache, new[0], n_new))
    return torch.cat(out)


def _decode(model: nn.Module, cache, first: torch.Tensor, n_new: int) -> torch.Tensor:
    """(B, n_new): ``first`` (B,) and the n_new − 1 greedy tokens after it, the prompt's keys/values in ``cache``."""
    key, new = cache_keyword(model), [first]
    for _ in range(n_new - 1):
        step = model(input_ids=new[-1][:, None], use_cache=True, logits_to_keep=1, **{key: cache})
        new.append(step.logits[:, -1].argmax(-1))
    return torch.stack(new, dim=1)


@torch.no_grad()
def continuation_nll(
    model: nn.Module,
    windows: torch.Tensor,
    prompt_len: int,
    batch_size: int = 16,
    inputs: torch.Tensor | None = None,
    first_top: int = 0,
) -> np.ndarray:
    """Mean next-token loss (nats) of each window's tokens after the first ``prompt_len``, given all before.

    With ``inputs`` = ``block_inputs(model, windows, first_top)`` only the blocks from ``first_top`` on are run
    (valid when the blocks below are those the inputs were computed with).
    """
    out = []
    context = top_blocks_only(model, first_top) if inputs is not None else contextlib.nullcontext()
    with context:
        for i in range(0, len(windows), batch_size):
            ids = windows[i : i + batch_size]  # (B, L)
            feed = {"inputs_embeds": inputs[i : i + batch_size]} if inputs is not None else {"input_ids": ids}
            n_scored = ids.shape[1] - prompt_len
            logits = model(**feed, logits_to_keep=n_scored + 1).logits[:, :-1].float()  # (B, L − P, V)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, prompt_len:], reduction="none")
            out.append(nll.mean(dim=1))
    return torch.cat(out).double().cpu().numpy()


@torch.no_grad()
def final_hidden_states(
    model: nn.Module, ids: torch.Tensor, batch_size: int = 16, inputs: torch.Tensor | None = None, first_top: int = 0
) -> torch.Tensor:
    """(N, L, H) last-layer hidden states (after the final norm), the representation α̂ compares.

    ``inputs``/``first_top`` as in ``continuation_nll``: run only the top blocks on precomputed block inputs.
    """
    out = []
    context = top_blocks_only(model, first_top) if inputs is not None else contextlib.nullcontext()
    with context:
        for i in range(0, len(ids), batch_size):
            feed = (
                {"inputs_embeds": inputs[i : i + batch_size]}
                if inputs is not None
                else {"input_ids": ids[i : i + batch_size]}
            )
            out.append(model(**feed, output_hidden_states=True, logits_to_keep=1).hidden_states[-1].float())
    return torch.cat(out)


_ROUGE = None


def rouge_l(tokenizer, generated: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Rouge-L F-measure of each generated continuation against the true one (decoded text, rouge-score)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    if len(generated) != len(reference):
        raise ValueError(f"{len(generated)} continuations vs {len(reference)} references")
    gen = tokenizer.batch_decode(generated.tolist(), skip_special_tokens=True)
    ref = tokenizer.batch_decode(reference.tolist(), skip_special_tokens=True)
    return np.array([_ROUGE.score(r, g)["rougeL"].fmeasure for g, r in zip(gen, ref)])


@torch.no_grad()
def score_passages(
    model: nn.Module,
    tokenizer,
    windows: torch.Tensor,
    prompt_len: int,
    batch_size: int = 48,
    lower: LowerPass | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(Rouge-L, NLL) per passage: the greedy continuation of each window's first ``prompt_len`` tokens scored
    against the rest of the window, and the next-token loss of that rest given the true text before it.

    With ``lower`` = ``models.lower_pass(model, windows, first_top, prompt_len)`` the frozen lower blocks are not
    run again over the windows: one pass of the top blocks gives the NLL, the first generated token and the top
    blocks' keys/values of the prompt; the lower blocks' keys/values come from ``lower``; only the generated
    tokens go through the whole model. The continuations are the same as without it.
    """
    n_new = windows.shape[1] - prompt_len
    if lower is None:
        generated = greedy_continuations(model, windows[:, :prompt_len], n_new, batch_size)
        nll = continuation_nll(model, windows, prompt_len, batch_size)
    else:
        if lower.inputs.shape[:2] != windows.shape or (lower.keys and lower.keys[0].shape[2] != prompt_len):
            raise ValueError("the lower pass was computed for other windows or another prompt length")
        key, generated, nlls = cache_keyword(model), [], []
        for i in range(0, len(windows), batch_size):
            ids, cache = windows[i : i + batch_size], new_cache()
            with top_blocks_only(model, lower.first_top):
                out = model(inputs_embeds=lower.inputs[i : i + batch_size], use_cache=True,
                            logits_to_keep=n_new + 1, **{key: cache})  # fmt: skip
            logits = out.logits.float()  # positions P − 1 … L − 1
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, prompt_len:], reduction="none"
            )
            nlls.append(nll.mean(dim=1))
            prompt_cache = new_cache()  # lower blocks from the lower pass, top blocks from this pass, cut at P
            for j in range(n_layers(model)):
                if j < lower.first_top:
                    k, v = lower.keys[j][i : i + batch_size], lower.values[j][i : i + batch_size]
                else:
                    k, v = cache.layers[j].keys[:, :, :prompt_len], cache.layers[j].values[:, :, :prompt_len]
                prompt_cache.update(k, v, j)
            generated.append(_decode(model, prompt_cache, logits[:, 0].argmax(-1), n_new))
        generated, nll = torch.cat(generated), torch.cat(nlls).double().cpu().numpy()
    rouge = rouge_l(tokenizer, generated, windows[:, prompt_len:])
    return rouge, nll


def output_similarity(reference: torch.Tensor, out_1: torch.Tensor, out_2: torch.Tensor) -> np.ndarray:
    """Per input X, the mean over positions of α̂ = cos(f(X; Ψ*_1) − f(X; Ψ⁽⁰⁾), f(X; Ψ*_2) − f(X; Ψ⁽⁰⁾)).

    Tensors are (N, L, H) outputs of three models on the same inputs; α̂ is the mean of the returned (N,) values
    (``tvutils.editing.similarity.output_alpha``, one cosine per position over the H features).
    """
    if not reference.shape == out_1.shape == out_2.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)}, {tuple(out_1.shape)}, {tuple(out_2.shape)}")
    return output_alpha(out_1 - reference, out_2 - reference, dim=-1).mean(dim=1).cpu().numpy()
