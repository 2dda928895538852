"""``python -m tvutils suggest`` on tiny safetensors checkpoints: a recommendation, the merge it prints, each error."""

from __future__ import annotations

import copy
import json
import shlex
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTForImageClassification

from tvutils.__main__ import main

SIZE = 8


def _vit(seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=2)  # fmt: skip
    return ViTForImageClassification(config).eval()


def _save_moved(model: torch.nn.Module, direction: dict[str, torch.Tensor], folder, single: str | None = None) -> str:
    """Save a copy of ``model`` moved along ``direction`` as transformers saves it; with ``single``, as one file."""
    moved = copy.deepcopy(model)
    moved.load_state_dict({k: v + direction[k] for k, v in model.state_dict().items()})
    moved.save_pretrained(folder, safe_serialization=True)
    if single is None:
        return str(folder)
    shutil.copy(folder / "model.safetensors", single)
    return str(single)


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Base, two fine-tunes along shared and own random directions (aligned), a probe with 40 rows per task."""
    root = tmp_path_factory.mktemp("vit")
    base = _vit(0)
    base.save_pretrained(root / "base", safe_serialization=True)
    g = torch.Generator().manual_seed(1)
    shared = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in base.state_dict().items()}
    for name in ("a1", "a2"):
        own = {k: 0.03 * torch.randn(v.shape, generator=g) for k, v in base.state_dict().items()}
        _save_moved(base, {k: shared[k] + own[k] for k in shared}, root / name)
    x = torch.randn(80, 3, SIZE, SIZE, generator=g)
    task = torch.cat([torch.zeros(40), torch.ones(40)]).long()
    save_file({"pixel_values": x, "task": task}, str(root / "probe.safetensors"))
    target = torch.cat([task, -torch.ones(20).long()])
    save_file({"pixel_values": torch.randn(100, 3, SIZE, SIZE, generator=g), "task": target},
              str(root / "probe_target.safetensors"))  # fmt: skip
    save_file({"labels": torch.randint(0, 2, (20,), generator=g)}, str(root / "labels.safetensors"))
    save_file({"pixel_values": torch.randn(8, 3, SIZE + 1, SIZE), "task": task[:8]}, str(root / "bad.safetensors"))
    save_file({"pixel_values": x[:6], "task": torch.tensor([0, 0, 0, 1, 1, 1])}, str(root / "small.safetensors"))
    wrong = _vit(0)
    wrong.classifier = torch.nn.Linear(16, 3)
    wrong.save_pretrained(root / "wrong", safe_serialization=True)
    return {k: str(root / k) for k in ("base", "a1", "a2", "wrong")} | {
        k: str(root / f"{k}.safetensors") for k in ("probe", "probe_target", "labels", "bad", "small")
    }


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _suggest(f: dict[str, str], *extra: str, goal: str = "add", probe: str = "probe") -> list[str]:
    return [
        "suggest",
        "--base",
        f["base"],
        "--finetuned",
        f["a1"],
        f["a2"],
        "--goal",
        goal,
        "--probe",
        f[probe],
        *extra,
    ]


def test_add_prints_estimate_lambda_and_a_merge_command_that_runs(vit_files, capsys, tmp_path):
    out_path = str(tmp_path / "merged.safetensors")
    code, out, err = _run(_suggest(vit_files, "--out", out_path), capsys)
    assert code == 0, err
    assert "α̂[1,2] = +" in out and "95 % interval" in out  # two models sharing a direction: aligned
    assert "relation: T1–T2 aligned" in out
    assert "guarantee: holds" in out
    command = next(line for line in out.splitlines() if line.startswith("merge: "))[len("merge: ") :]
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "tvutils", "merge"] and "--lambdas" in argv
    assert main(argv[3:] + ["--quiet"]) == 0
    assert (tmp_path / "merged.safetensors").is_file()


def test_forget_and_target_goals(vit_files, capsys):
    code, out, err = _run(_suggest(vit_files, goal="forget"), capsys)
    assert code == 0, err
    assert "λ = 1 -" in out  # the kept task at 1, the forgotten one negated
    code, out, err = _run(_suggest(vit_files, "--target-labels", vit_files["labels"], goal="target",
                                   probe="probe_target", ) + ["--max-halfwidth", "100"], capsys)  # fmt: skip
    assert code == 0, err
    assert "γ̂[1]" in out and "γ̂[2]" in out


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_error_probe_of_the_wrong_shape(vit_files, capsys):
    err = _one_line_error(*_run(_suggest(vit_files, probe="bad"), capsys))
    assert "pixel_values (N, 3, 8, 8)" in err


def test_error_probe_too_small_says_how_many_are_needed(vit_files, capsys):
    err = _one_line_error(*_run(_suggest(vit_files, probe="small"), capsys))
    assert "3 example(s); at least 8 are needed" in err
    err = _one_line_error(*_run(_suggest(vit_files, "--max-halfwidth", "0.0001"), capsys))
    assert "probe too small for a stable estimate" in err and "examples per task are needed" in err
    assert "(40 per task)" in err  # the probe has 40 rows per task


def test_error_checkpoints_that_do_not_match(vit_files, capsys):
    argv = _suggest(vit_files)
    argv[argv.index(vit_files["a2"])] = vit_files["wrong"]
    err = _one_line_error(*_run(argv, capsys))
    assert "classifier.bias" in err and "shape" in err


def test_error_target_goal_without_labels(vit_files, capsys):
    err = _one_line_error(*_run(_suggest(vit_files, goal="target", probe="probe_target"), capsys))
    assert "--target-labels" in err


def test_error_probe_without_the_target_rows(vit_files, capsys):
    err = _one_line_error(*_run(_suggest(vit_files, "--target-labels", vit_files["labels"], goal="target"), capsys))
    assert "labels" in err


def test_causal_lm_probe_of_token_ids(tmp_path, capsys):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    base = LlamaForCausalLM(config).eval()
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    g = torch.Generator().manual_seed(2)
    shared = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in base.state_dict().items()}
    names = [  # single files, not folders
        _save_moved(base, {k: shared[k] + 0.02 * torch.randn(v.shape, generator=g) for k, v in shared.items()},
                    tmp_path / name, tmp_path / f"{name}.safetensors")
        for name in ("a1", "a2")
    ]  # fmt: skip
    ids = torch.randint(0, 50, (40, 12), generator=g)
    save_file({"input_ids": ids, "task": torch.arange(40) % 2}, str(tmp_path / "p.safetensors"))
    argv = ["suggest", "--base", str(tmp_path / "base"), "--finetuned", *names, "--goal", "add",
            "--probe", str(tmp_path / "p.safetensors"), "--max-halfwidth", "100"]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "α̂[1,2]" in out and "merge: python -m tvutils merge" in out
    save_file({"input_ids": ids.float(), "task": torch.arange(40) % 2}, str(tmp_path / "f.safetensors"))
    argv[argv.index(str(tmp_path / "p.safetensors"))] = str(tmp_path / "f.safetensors")
    err = _one_line_error(*_run(argv, capsys))
    assert "integer token ids" in err


def _shard(folder: str, target) -> str:
    """A transformers folder re-written as two shards and an index (the sharded Hugging Face layout)."""
    sd = load_file(f"{folder}/model.safetensors")
    keys = sorted(sd)
    target.mkdir()
    shutil.copy(f"{folder}/config.json", target / "config.json")
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(target / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(target)


def test_sharded_checkpoints(vit_files, tmp_path, capsys):
    """The sharded Hugging Face layout (an index and its shards) is read as merge reads it."""
    base, a1, a2 = (_shard(vit_files[name], tmp_path / name) for name in ("base", "a1", "a2"))
    argv = ["suggest", "--base", base, "--finetuned", a1, a2, "--goal", "add", "--probe", vit_files["probe"]]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    single = _run(_suggest(vit_files), capsys)[1]
    assert out.splitlines()[0] == single.splitlines()[0]  # the same α̂ from the same weights
