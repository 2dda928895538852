"""The command line's side of ``suggest``: safetensors checkpoints of a ``transformers`` model, loaded one at a time,
and their outputs on a probe file.

**Checkpoints**: what ``python -m tvutils merge`` reads (a ``.safetensors`` file, a folder, a sharded layout),
validated by ``tvutils.editing.checkpoint`` (the only names imported from it are those below, so that a change
there touches this one import). The model is the one the ``config.json`` beside the base checkpoint describes, a
causal LM (``…ForCausalLM``) or an image classifier (``…ForImageClassification``); each checkpoint is read into it
by ``from_pretrained`` (which maps the names a ``transformers`` version saves under) through a folder of links to
the checkpoint's files and that config. The previous model is freed before the next is read: one model, and the
probe's outputs of each, are in memory at once.

**The probe file** (``--probe``) is a ``.safetensors`` file holding
  * ``pixel_values`` (N, channels, size, size) float, as the classifier takes them (already resized and
    normalised), or ``input_ids`` (N, L) integer token ids for a causal LM;
  * ``task`` (N,) integer: which fine-tuned checkpoint's task each example comes from (0 for the first ``--finetuned``,
    1 for the second, …), or −1 for an example of the target task (``--goal target``).
Inputs only: no label is read from it. ``--target-labels`` is a ``.safetensors`` file with ``labels``: one class
id per target example (classifier), or (N_target, L) token ids, −100 where ignored (causal LM), in the order of the
probe's target rows.

**Outputs compared**: a classifier's logits, centred over the classes (a shift common to every class changes no
prediction; for two classes this is half the logit margin); a causal LM's last hidden states (as chapter 08
compares them). **Gains** (for γ̂): the change of the centred logit of the label, the model's own prediction on a
source task's inputs for a classifier, the true next token for a causal LM.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..editing.checkpoint import INDEX_NAME, SINGLE_NAME, Checkpoint, CheckpointError
from ..editing.streaming import check_same_layout

__all__ = ["Checkpoint", "CheckpointError", "check_same_layout", "ProbeFileError", "Probe", "load_probe", "Runner"]


class ProbeFileError(ValueError):
    """A probe or labels file that does not fit the model or the goal."""


@dataclass
class Probe:
    inputs: torch.Tensor  # (N, C, H, W) pixel values or (N, L) token ids
    task: torch.Tensor  # (N,) int64: source task index, −1 for the target
    key: str  # "pixel_values" or "input_ids"
    labels: torch.Tensor | None = None  # the target rows' labels

    def rows(self, task: int) -> torch.Tensor:
        return torch.nonzero(self.task == task).flatten()


def _read(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ProbeFileError(f"{path}: no such {what} file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ProbeFileError(f"{path}: not a readable safetensors {what} file ({err})") from None


def load_probe(path: str | Path, labels: str | Path | None = None) -> Probe:
    """The probe (and target labels) file, checked for its own consistency (the model's fit: ``Runner.check``)."""
    data = _read(path, "probe")
    keys = [k for k in ("pixel_values", "input_ids") if k in data]
    if len(keys) != 1 or "task" not in data:
        raise ProbeFileError(
            f"{path}: a probe holds 'task' and one of 'pixel_values' / 'input_ids'; it has {sorted(data)}"
        )
    x, task = data[keys[0]], data["task"]
    if task.ndim != 1 or task.dtype not in (torch.int64, torch.int32) or len(task) != len(x):
        raise ProbeFileError(f"{path}: 'task' must be one integer per example ({len(x)}), got {tuple(task.shape)}")
    want = 4 if keys[0] == "pixel_values" else 2
    if x.ndim != want:
        raise ProbeFileError(f"{path}: '{keys[0]}' must have {want} dimensions, got shape {tuple(x.shape)}")
    if keys[0] == "input_ids" and x.is_floating_point():
        raise ProbeFileError(f"{path}: 'input_ids' must be integer token ids, got {x.dtype}")
    probe = Probe(x if keys[0] == "input_ids" else x.float(), task.long(), keys[0])
    if labels is not None:
        y = _read(labels, "labels").get("labels")
        n_target = len(probe.rows(-1))
        want = (n_target,) if probe.key == "pixel_values" else (n_target, x.shape[1])
        if y is None or tuple(y.shape) != want or y.is_floating_point():
            got = "none" if y is None else f"{y.dtype} {tuple(y.shape)}"
            raise ProbeFileError(
                f"{labels}: needs integer 'labels' of shape {want} (the probe's target rows), got {got}"
            )
        probe.labels = y.long()
    return probe


class Runner:
    """One ``transformers`` model at a time, built from the base checkpoint's config; ``load`` replaces it."""

    def __init__(self, base: Checkpoint, batch_size: int = 32) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.folder = base.folder or base.path.parent
        if not (self.folder / "config.json").is_file():
            raise CheckpointError(
                f"{self.folder}: no config.json beside the base checkpoint (needed to build the model)"
            )
        config = AutoConfig.from_pretrained(str(self.folder), local_files_only=True)
        arch = (config.architectures or [""])[0]
        if arch.endswith("ForCausalLM"):
            self.kind, self.factory = "causal-lm", AutoModelForCausalLM
        elif arch.endswith("ForImageClassification"):
            self.kind, self.factory = "classifier", AutoModelForImageClassification
        else:
            raise CheckpointError(
                f"{self.folder}/config.json: architecture {arch!r} is neither a causal LM nor a classifier"
            )
        self.config, self.batch_size, self.model = config, batch_size, None

    @property
    def width(self) -> int:
        return int(getattr(self.config, "hidden_size", 0) or getattr(self.config, "n_embd", 0))

    def check(self, probe: Probe) -> None:
        """The probe's inputs must be what this model takes."""
        x, c = probe.inputs, self.config
        if self.kind == "classifier":
            want = (c.num_channels, c.image_size, c.image_size)
            if probe.key != "pixel_values" or tuple(x.shape[1:]) != want:
                raise ProbeFileError(f"probe: an image classifier takes pixel_values (N, {', '.join(map(str, want))}), "
                                     f"got {probe.key} {tuple(x.shape)}")  # fmt: skip
        elif probe.key != "input_ids" or int(x.max()) >= c.vocab_size or int(x.min()) < 0:
            raise ProbeFileError(f"probe: a causal LM takes input_ids (N, L) with ids in [0, {c.vocab_size})")

    def load(self, checkpoint: Checkpoint) -> None:
        """Replace the model by one holding ``checkpoint``'s tensors (``from_pretrained`` on a folder of links to its
        files and the base's config.json, so that ``transformers`` maps its key names); refused unless every tensor
        of the model is in the checkpoint and fits."""
        self.model = None  # the previous model is freed before the next one is read
        with tempfile.TemporaryDirectory(prefix="tvutils-suggest-") as tmp:
            folder = Path(tmp)
            (folder / "config.json").symlink_to((self.folder / "config.json").resolve())
            if checkpoint.sharded:
                (folder / INDEX_NAME).symlink_to(checkpoint.index_file.resolve())
                for file, name in checkpoint.shard_names.items():
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).symlink_to(file.resolve())
            else:
                (folder / SINGLE_NAME).symlink_to(checkpoint.files[0].resolve())
            try:
                model, info = self.factory.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                           output_loading_info=True, use_safetensors=True)  # fmt: skip
            except (OSError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{checkpoint.path}: does not load into the base's model: {err}") from None
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            kind, keys = next(iter(bad.items()))
            raise CheckpointError(
                f"{checkpoint.path}: {kind.replace('_', ' ')} for the base's model: {sorted(keys)[:3]}"
            )
        self.model = model.eval()

    @torch.no_grad()
    def outputs(self, probe: Probe) -> tuple[torch.Tensor, torch.Tensor]:
        """(compared outputs (N, …), gains (N,)) of the loaded model on every probe row (module docstring)."""
        outs, gains = [], []
        for i in range(0, len(probe.inputs), self.batch_size):
            x = probe.inputs[i : i + self.batch_size]
            if self.kind == "classifier":
                logits = self.model(pixel_values=x).logits.double()
                outs.append(logits - logits.mean(-1, keepdim=True))
            else:
                out = self.model(input_ids=x, output_hidden_states=True)
                outs.append(out.hidden_states[-1].double())
                logits = out.logits.double()
                outs_logits = logits - logits.mean(-1, keepdim=True)
                gains.append(_token_gain(outs_logits, _lm_labels(probe, i, x)))
        compared = torch.cat(outs)
        if self.kind == "classifier":
            return compared, torch.zeros(len(compared))
        return compared, torch.cat(gains)

    def class_gains(self, centred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A classifier's centred logit at each label: (N, C), (N,) → (N,)."""
        if int(labels.max()) >= centred.shape[1] or int(labels.min()) < 0:
            raise ProbeFileError(f"target labels must be class ids in [0, {centred.shape[1]})")
        return centred.gather(1, labels[:, None]).squeeze(1)


def _lm_labels(probe: Probe, start: int, ids: torch.Tensor) -> torch.Tensor:
    """The labels of rows start…: the target rows' given labels, else the text itself (next tokens)."""
    labels = ids.clone()
    if probe.labels is not None:
        target = probe.rows(-1).tolist()
        for r in range(len(ids)):
            with contextlib.suppress(ValueError):
                labels[r] = probe.labels[target.index(start + r)]
    return labels


def _token_gain(centred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the centred logit of the next label token ((B, L, V), (B, L) → (B,)); −100 ignored."""
    nxt = labels[:, 1:]
    valid = nxt != -100
    picked = centred[:, :-1].gather(2, nxt.clamp(min=0)[..., None]).squeeze(2)
    return (picked * valid).sum(1) / valid.sum(1).clamp(min=1)
