"""tvutils.editing.checkpoint and ``python -m tvutils merge``: streaming task arithmetic on safetensors checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tvutils.__main__ import main
from tvutils.editing import variants
from tvutils.editing.checkpoint import Checkpoint, CheckpointError
from tvutils.editing.streaming import merge_checkpoints
from tvutils.editing.task_vector import TaskVector

ROOT = Path(__file__).resolve().parents[2]


def _model(seed, base=None):
    g = torch.Generator().manual_seed(seed)
    sd = {
        "emb.weight": torch.randn(12, 6, generator=g),
        "layer.0.w": torch.randn(6, 6, generator=g),
        "layer.0.b": torch.randn(6, generator=g),
        "layer.1.w": torch.randn(5, 6, generator=g),
        "position_ids": torch.arange(7),
    }
    if base is not None:
        sd = {k: (base[k] + 0.1 * v if v.is_floating_point() else base[k]) for k, v in sd.items()}
    return sd


def _save(sd, path, shards=None):
    """A single file, or a folder with the keys split into shards plus an index."""
    if shards is None:
        save_file(sd, path)
        return path
    path.mkdir()
    keys, weight_map = list(sd), {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[s::shards]}
        save_file(part, path / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def models():
    base = _model(0)
    return base, _model(1, base), _model(2, base)


def _expected(base, tuned, lambdas, tv_op=None):
    tvs = [TaskVector.from_models(base, t) for t in tuned]
    if tv_op is not None:
        tvs = [tv_op(tv) for tv in tvs]
    total = sum((lam * tv for lam, tv in zip(lambdas[1:], tvs[1:])), lambdas[0] * tvs[0])
    return total.apply_to(base)


def _assert_close(out, ref):
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape
        torch.testing.assert_close(out[k], ref[k], rtol=1e-6, atol=1e-6)


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name or ".old" in p.name] == []


def test_single_file_merge_equals_in_memory(tmp_path, models):
    base, a, b = models
    paths = [_save(sd, tmp_path / f"{n}.safetensors") for n, sd in zip("xab", models)]
    out = merge_checkpoints(paths[0], paths[1:], [1.0, -0.6], tmp_path / "out.safetensors")
    _assert_close(load_file(out), _expected(base, [a, b], [1.0, -0.6]))
    assert _no_leftovers(tmp_path)


def test_sharded_merge_writes_shards_and_index(tmp_path, models):
    base, a, b = models
    paths = [_save(sd, tmp_path / n, shards=3) for n, sd in zip("xab", models)]
    out = merge_checkpoints(paths[0], paths[1:], [0.5, 0.7], tmp_path / "merged")
    ck = Checkpoint(out)
    assert ck.sharded and len(ck.files) == 3 and (out / "config.json").is_file()
    merged = {}
    for f in ck.files:
        merged.update(load_file(f))
    _assert_close(merged, _expected(base, [a, b], [0.5, 0.7]))


def test_mixed_layouts_and_half_precision(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g).half(), "v": torch.randn(3, dtype=torch.float64, generator=g)}
    tuned = {"w": (base["w"].float() + 0.1).half(), "v": base["v"] + 0.2}
    bp = _save(base, tmp_path / "base", shards=2)
    tp = _save(tuned, tmp_path / "tuned.safetensors")
    out = merge_checkpoints(bp, [tp], [-1.0], tmp_path / "out")
    merged = {}
    for f in Checkpoint(out).files:
        merged.update(load_file(f))
    assert merged["w"].dtype == torch.float16 and merged["v"].dtype == torch.float64
    torch.testing.assert_close(merged["v"], base["v"] - 0.2)
    # two float16 roundings (the fine-tuned weights, the output), each at most half a spacing at |w| + 0.1
    spacing = torch.finfo(torch.float16).eps * 2 ** torch.floor(torch.log2(base["w"].float().abs() + 0.1))
    assert ((merged["w"].float() - (base["w"].float() - 0.1)).abs() <= spacing + 1e-7).all()


@pytest.mark.parametrize(
    "option,tv_op",
    [
        ({"rank": 1}, lambda tv: variants.low_rank(tv, 1)),
        ({"keep_rows": 0.5}, lambda tv: variants.keep_rows(tv, 0.5)),
        ({"keep_entries": 0.3}, lambda tv: variants.keep_entries(tv, 0.3)),
    ],
)
def test_variants_reuse_task_vector_operations(tmp_path, models, option, tv_op):
    base, a, b = models
    paths = [_save(sd, tmp_path / f"{n}.safetensors") for n, sd in zip("xab", models)]
    out = merge_checkpoints(paths[0], paths[1:], [1.0, 0.4], tmp_path / "out.safetensors", **option)
    _assert_close(load_file(out), _expected(base, [a, b], [1.0, 0.4], tv_op))


# ---- bad input: fails before anything is written, naming the problem ---------------------------------------------
def _fails(tmp_path, base, tuned, lambdas, match, out_name="out.safetensors"):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CheckpointError, match=match):
        merge_checkpoints(base, tuned, lambdas, tmp_path / out_name)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing left behind


def test_mismatched_keys_shapes_dtypes(tmp_path, models):
    base, a, _ = models
    bp = _save(base, tmp_path / "base.safetensors")
    extra = _save({**a, "new.w": torch.zeros(2)}, tmp_path / "extra.safetensors")
    _fails(tmp_path, bp, [extra], [1.0], "keys differ.*new.w")
    shape = _save({**a, "layer.0.w": torch.zeros(6, 5)}, tmp_path / "shape.safetensors")
    _fails(tmp_path, bp, [shape], [1.0], "layer.0.w.*shape")
    dtype = _save({**a, "layer.0.b": a["layer.0.b"].double()}, tmp_path / "dtype.safetensors")
    _fails(tmp_path, bp, [dtype], [1.0], "layer.0.b.*dtype")


def test_missing_shard(tmp_path, models):
    base, a, _ = models
    bp = _save(base, tmp_path / "base", shards=3)
    ap = _save(a, tmp_path / "a", shards=3)
    (ap / "model-00002-of-00003.safetensors").unlink()
    _fails(tmp_path, bp, [ap], [1.0], "shard model-00002-of-00003.safetensors is missing", out_name="out")


def test_pickles_refused(tmp_path, models):
    base, a, _ = models
    bp = _save(base, tmp_path / "base.safetensors")
    torch.save(a, tmp_path / "a.bin")
    _fails(tmp_path, bp, [tmp_path / "a.bin"], [1.0], "pickle")
    torch.save(a, tmp_path / "disguised.safetensors")  # a torch.save file under a safetensors name
    _fails(tmp_path, bp, [tmp_path / "disguised.safetensors"], [1.0], "pickle")
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(a, folder / "pytorch_model.bin")
    _fails(tmp_path, bp, [folder], [1.0], "pickle")


def test_lambda_count_and_other_checks(tmp_path, models):
    base, a, b = models
    paths = [_save(sd, tmp_path / f"{n}.safetensors") for n, sd in zip("xab", models)]
    _fails(tmp_path, paths[0], paths[1:], [1.0], "2 fine-tuned checkpoint.*1 λ")
    _fails(tmp_path, paths[0], [], [], "at least one")
    _fails(tmp_path, paths[0], [tmp_path / "nope.safetensors"], [1.0], "no such file")
    with pytest.raises(CheckpointError, match="exists"):
        merge_checkpoints(paths[0], paths[1:2], [1.0], paths[2])
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(paths[1].read_bytes()[:-8])
    _fails(tmp_path, paths[0], [trunc], [1.0], "truncated")
    with pytest.raises(CheckpointError, match="non-float tensor 'position_ids'"):
        merge_checkpoints(
            paths[0],
            [_save({**a, "position_ids": torch.arange(7) + 1}, tmp_path / "p.safetensors")],
            [1.0],
            tmp_path / "out.safetensors",
        )
    assert not (tmp_path / "out.safetensors").exists() and _no_leftovers(tmp_path)


def test_interrupted_merge_leaves_no_output(tmp_path, models):
    paths = [_save(sd, tmp_path / n, shards=2) for n, sd in zip("xab", models)]

    def interrupt(msg):
        raise KeyboardInterrupt  # after the first shard is written

    with pytest.raises(KeyboardInterrupt):
        merge_checkpoints(paths[0], paths[1:], [1.0, 1.0], tmp_path / "out", log=interrupt)
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path)


def test_overwrite_replaces_atomically(tmp_path, models):
    paths = [_save(sd, tmp_path / f"{n}.safetensors") for n, sd in zip("xab", models)]
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    merge_checkpoints(paths[0], paths[1:], [1.0, 1.0], out, overwrite=True)
    assert set(load_file(out)) == set(models[0]) and _no_leftovers(tmp_path)


# ---- the command line ------------------------------------------------------------------------------------------------
def test_cli_merge_and_errors(tmp_path, models, capsys):
    base, a, b = models
    paths = [str(_save(sd, tmp_path / f"{n}.safetensors")) for n, sd in zip("xab", models)]
    out = tmp_path / "out.safetensors"
    args = ["merge", "--base", paths[0], "--finetuned", *paths[1:], "--lambdas", "1.0", "-0.6", "--out", str(out)]
    assert main(args) == 0
    _assert_close(load_file(out), _expected(base, [a, b], [1.0, -0.6]))
    bad = ["merge", "--base", paths[0], "--finetuned", *paths[1:], "--lambdas", "1.0", "--out", str(tmp_path / "o2")]
    assert main(bad) == 2
    assert "λ" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_cli_as_module(tmp_path, models):
    paths = [str(_save(sd, tmp_path / f"{n}.safetensors")) for n, sd in zip("xab", models)]
    cmd = [
        sys.executable,
        "-m",
        "tvutils",
        "merge",
        "--base",
        paths[0],
        "--finetuned",
        paths[1],
        "--lambdas",
        "2",
        "--out",
        str(tmp_path / "o.safetensors"),
        "--rank",
        "1",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "merged 1 task vector" in done.stderr
