"""LoRA fine-tuning of the top blocks of a causal LM, and the task vector it makes.

A LoRA fine-tune (``peft``) is kept as its factors (A, B, scale) per weight matrix; ``task_vector_from_factors``
turns them into the dense deltas ΔW = scale·B·A keyed like the base model's state dict, a ``TaskVector``.
The factors are cached as safetensors (``cached_lora``), keyed by everything that changes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..chapter.paths import atomic_write_bytes, cache_dir
from ..chapter.progress import progress
from ..chapter.runtime import fingerprint
from ..editing.task_vector import TaskVector
from .models import block_inputs, n_layers, top_blocks_only

Factors = dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # base key -> (A (r, in), B (out, r), scale)


@dataclass(frozen=True, kw_only=True)
class LoraRecipe:
    """One LoRA fine-tune: rank, how many top blocks it trains, and AdamW's schedule."""

    rank: int  # LoRA rank r of every adapted matrix
    train_layers: int  # blocks trained, counted from the top (every linear layer inside them)
    epochs: int  # passes over the windows, each in a seeded order
    lr: float  # AdamW step size (no weight decay)
    batch_size: int
    seed: int  # seeds the adapters' initialisation and the order of the windows
    alpha: float | None = None  # LoRA's scaling α (None: 2·rank)


def fine_tune_lora(
    model: nn.Module, windows: torch.Tensor, recipe: LoraRecipe, *, inputs: torch.Tensor | None = None
) -> tuple[Factors, list[float]]:
    """LoRA (the recipe's rank, every linear layer of its last ``train_layers`` blocks) trained on ``windows``.

    windows: (N, L) token ids, all of one length, trained with the next-token loss over the whole window;
    AdamW, ``epochs`` passes in a seeded order. ``inputs`` are the windows' ``block_inputs`` at the first trained
    block (computed here when not given). The model is returned unchanged (the adapters are removed) and the
    fine-tune comes back as its factors, with the loss of every step.
    """
    rank, train_layers, epochs, lr = recipe.rank, recipe.train_layers, recipe.epochs, recipe.lr
    batch_size, seed, alpha = recipe.batch_size, recipe.seed, recipe.alpha
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


CODE_VERSION = 2  # of fine_tune_lora: raise it when a change of the code changes what a recipe trains


def lora_cache_path(model_name: str, kind: str, recipe: LoraRecipe, **depends: Any) -> Path:
    """Where a fine-tune of ``kind`` is cached: ``<cache>/lm/<model>/<kind>-<hash>.safetensors``, the hash
    covering the recipe, every other thing it ``depends`` on (texts, window sizes, a parent fine-tune …), the
    code version and the runtime (``fingerprint()``: library versions, thread count), so that a fine-tune made
    under other conditions is never reused silently."""
    doc = json.dumps(
        {"recipe": asdict(recipe), "code": CODE_VERSION, "runtime": fingerprint(), **depends},
        sort_keys=True,
        default=str,
    )
    return (
        cache_dir("lm", model_name.replace("/", "--"))
        / f"{kind}-{hashlib.sha256(doc.encode()).hexdigest()[:16]}.safetensors"
    )


def cached_fine_tune(
    model: nn.Module,
    model_name: str,
    kind: str,
    recipe: LoraRecipe,
    windows: torch.Tensor,
    inputs: torch.Tensor | None = None,
    /,
    **depends: Any,
) -> tuple[str, TaskVector, list[float]]:
    """``fine_tune_lora`` cached at ``lora_cache_path(model_name, kind, recipe, **depends)``: (the cache file's
    name, for the keys of what is computed from it; the task vector; the training losses)."""
    path = lora_cache_path(model_name, kind, recipe, **depends)
    factors, losses, _ = cached_lora(path, functools.partial(fine_tune_lora, model, windows, recipe, inputs=inputs))
    return path.name, task_vector_from_factors(factors), losses
