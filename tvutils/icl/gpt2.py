"""A small GPT-2 trained on the same prompts as the one-layer learner (the paper's Figures 17-20).

The prompt's columns p_1..p_l, p_query are the tokens: a linear read-in maps each column (d + d_y) to the
model width, ``transformers.GPT2Model`` runs on them as ``inputs_embeds``, and a linear read-out of the last
(query) position gives F(Ψ; P), trained with the same hinge loss.

[choice] (the talk gives only 3 layers and 2 heads) width 64, no dropout, and position-free inputs: GPT-2's
position embeddings are set to zero and frozen, so the model sees the prompt as a set of columns with the query
last, like the one-layer learner (causal attention lets the query attend to every column). Trained with Adam,
a linear warm-up and gradient clipping (``tvutils.icl.training.TrainConfig``).

The MLP neurons of layer ℓ are the columns of ``h[ℓ].mlp.c_fc`` (their input weights, the analogue of the
one-layer learner's rows of W_O) with the matching rows of ``h[ℓ].mlp.c_proj``; ``mlp_neuron_norms`` and
``prune_mlp_neurons`` measure and remove them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import DataConfig, Pair, Prompts, unseen_tasks
from .training import History, TrainConfig, train


@dataclass(frozen=True)
class GPT2LearnerConfig:
    D: int = 36  # height of a prompt column, d + d_y
    n_layer: int = 3
    n_head: int = 2
    n_embd: int = 64
    n_positions: int = 256  # longest prompt (context examples + query) the model accepts

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")


class GPT2Learner(nn.Module):
    """Read-in (D → n_embd), GPT2Model on ``inputs_embeds``, read-out of the query position (n_embd → 1)."""

    def __init__(self, cfg: GPT2LearnerConfig, seed: int = 0) -> None:
        super().__init__()
        with warnings.catch_warnings():  # tqdm.auto warns that ipywidgets is missing; no bars are shown
            warnings.simplefilter("ignore")
            from transformers import GPT2Config, GPT2Model

        self.cfg = cfg
        torch.manual_seed(seed)  # transformers initialises from the global generator
        config = GPT2Config(
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_embd,
            n_positions=cfg.n_positions,
            vocab_size=1,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        self.read_in = nn.Linear(cfg.D, cfg.n_embd)
        self.backbone = GPT2Model(config)
        self.backbone.wte.weight.requires_grad_(False)  # never used: the inputs are embeddings
        with torch.no_grad():
            self.backbone.wpe.weight.zero_()
        self.backbone.wpe.weight.requires_grad_(False)  # position-free inputs
        self.read_out = nn.Linear(cfg.n_embd, 1)

    def forward(self, P: torch.Tensor, output_attentions: bool = False):
        """F(Ψ; P): prompts (B, l + 1, D) → (B,); with ``output_attentions`` also each layer's (B, heads, T, T)."""
        if P.ndim != 3 or P.shape[2] != self.cfg.D:
            raise ValueError(f"expected prompts of shape (B, l + 1, D={self.cfg.D}), got {tuple(P.shape)}")
        if P.shape[1] > self.cfg.n_positions:
            raise ValueError(f"prompt of {P.shape[1]} columns exceeds n_positions={self.cfg.n_positions}")
        out = self.backbone(inputs_embeds=self.read_in(P), output_attentions=output_attentions)  # (B, T, n_embd)
        f = self.read_out(out.last_hidden_state[:, -1])[:, 0]  # (B,): the query position
        return (f, out.attentions) if output_attentions else f


@torch.no_grad()
def query_attention(model: GPT2Learner, P: torch.Tensor) -> torch.Tensor:
    """Each layer's attention of the query on the context columns, averaged over heads: (layers, B, l)."""
    config = model.backbone.config
    fast, config._attn_implementation = config._attn_implementation, "eager"  # only eager returns the weights
    try:
        _, attentions = model(P, output_attentions=True)
    finally:
        config._attn_implementation = fast
    return torch.stack([a[:, :, -1, :-1].mean(1) for a in attentions])


@torch.no_grad()
def attention_on_pattern_by_layer(model: GPT2Learner, prompts: Prompts) -> np.ndarray:
    """Each layer's mean attention mass (heads averaged) of the query on the context examples that share its
    relevant pattern (Figures 11-13's reading): (layers,)."""
    attn = query_attention(model, prompts.P)  # (layers, B, l)
    same = (prompts.pattern[:, :-1] == prompts.pattern[:, -1:]).float()  # (B, l)
    return (attn * same).sum(-1).mean(-1).numpy()


def mlp_layers(model: GPT2Learner) -> list[nn.Module]:
    """The MLP block of every layer."""
    return [block.mlp for block in model.backbone.h]


@torch.no_grad()
def mlp_neuron_norms(model: GPT2Learner) -> np.ndarray:
    """‖input weights‖ of every MLP neuron (columns of c_fc, weight (n_embd, 4·n_embd)): (layers, 4·n_embd)."""
    return np.stack([mlp.c_fc.weight.double().norm(dim=0).numpy() for mlp in mlp_layers(model)])


@torch.no_grad()
def prune_mlp_neurons(model: GPT2Learner, keep: np.ndarray) -> None:
    """Remove (zero in place) every MLP neuron where ``keep`` (layers, 4·n_embd) is False: its c_fc column and
    bias and its c_proj row, so it adds nothing to the residual stream."""
    layers = mlp_layers(model)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(layers), layers[0].c_fc.weight.shape[1]):
        shape = (len(layers), layers[0].c_fc.weight.shape[1])
        raise ValueError(f"keep has shape {keep.shape}, the model's MLP neurons {shape}")
    for mlp, k in zip(layers, keep):
        drop = torch.from_numpy(~k)
        mlp.c_fc.weight[:, drop] = 0.0
        mlp.c_fc.bias[drop] = 0.0
        mlp.c_proj.weight[drop, :] = 0.0


def pruned_gpt2(model: GPT2Learner, keep: np.ndarray) -> GPT2Learner:
    """A copy of the model with the MLP neurons where ``keep`` is False removed."""
    out = copy.deepcopy(model)
    prune_mlp_neurons(out, keep)
    return out


# ---- training, cached --------------------------------------------------------------------------------------
def _recipe_key(recipe: dict) -> str:
    from ..chapter.runtime import fingerprint

    sources = [Path(__file__).with_name(n).read_bytes() for n in ("gpt2.py", "training.py", "data.py")]
    code = hashlib.sha256(b"".join(sources)).hexdigest()[:16]
    text = json.dumps({"recipe": recipe, "code": code, "runtime": fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def trained_gpt2(
    tasks: Sequence[Pair],
    data_cfg: DataConfig,
    learner_cfg: GPT2LearnerConfig,
    train_cfg: TrainConfig,
    run: int,
    n_val: int = 500,
    device: str = "cpu",
    cache: bool = True,
) -> tuple[GPT2Learner, History]:
    """GPT-2 of ``run`` trained on prompts of ``tasks`` (watched on the unseen tasks), cached under
    ``_cache/icl_gpt2/<key>`` (safetensors weights and the history), the key covering the recipe, the code of
    this module, the training loop and the data model, and the runtime fingerprint."""
    from safetensors.torch import load_file, save_file

    from ..chapter.paths import atomic_write_bytes, cache_dir
    from . import seeds
    from .experiments import validation_prompts

    recipe = {"tasks": [list(t) for t in tasks], "data": asdict(data_cfg), "learner": asdict(learner_cfg),
              "train": asdict(train_cfg), "run": run, "n_val": n_val, "device": device}  # fmt: skip
    folder = cache_dir("icl_gpt2") / _recipe_key(recipe)
    model = GPT2Learner(learner_cfg, seed=seeds.init(run))
    if cache and (folder / "history.json").is_file():
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model, History(**json.loads((folder / "history.json").read_text()))
    watch = unseen_tasks(tasks, data_cfg.M1) or list(tasks)
    val = validation_prompts(watch, data_cfg, run, n_val)
    model.to(device)
    trained, hist = train(model, tasks, data_cfg, train_cfg, seeds.training(run), val.to(device), device=device)
    trained.to("cpu")
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in trained.state_dict().items()}
        tmp = folder / f".model.safetensors.tmp{os.getpid()}"
        save_file(state, str(tmp))
        os.replace(tmp, folder / "model.safetensors")
        doc = {k: v for k, v in asdict(hist).items() if k != "snapshots"}
        atomic_write_bytes(folder / "history.json", json.dumps(doc).encode())
    return trained, hist
