import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from tvutils.chapter import paths, progress
from tvutils.chapter.plotting import _edges, heatmap, region_outline


def test_heatmap_and_region_outline_draw_and_check_shapes():
    rows, cols = np.array([0.0, 0.5, 1.0]), np.array([-1.0, 0.0, 1.0, 2.0])
    fig, ax = plt.subplots()
    heatmap(ax, np.arange(12.0).reshape(3, 4), rows, cols, "α", "λ", "loss")
    mask = np.zeros((3, 4), bool)
    mask[1:, 2:] = True
    region_outline(ax, mask, rows, cols, label="Theorem 1")
    assert len(ax.lines) == 8  # a 2×2 block has 8 unit edges on its boundary
    with pytest.raises(ValueError, match="shape"):
        heatmap(ax, np.zeros((2, 2)), rows, cols, "α", "λ", "loss")
    with pytest.raises(ValueError, match="shape"):
        region_outline(ax, np.zeros((4, 3), bool), rows, cols)
    plt.close(fig)
    assert np.allclose(_edges(np.array([0.0, 1.0, 2.0])), [-0.5, 0.5, 1.5, 2.5])


def test_progress_is_quiet_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not progress.progress_enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("TVUTILS_PROGRESS", "1")
    assert progress.progress_enabled()
    monkeypatch.setenv("TVUTILS_PROGRESS", "0")
    assert not progress.progress_enabled()
    assert list(progress.progress(range(3))) == [0, 1, 2]


def test_progress_bars_are_tqdm_auto(monkeypatch, capsys):
    """tqdm.auto picks widget bars inside Jupyter or Colab and text bars elsewhere (here: text, on stderr)."""
    import tqdm.auto

    assert progress.tqdm is tqdm.auto.tqdm
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TVUTILS_PROGRESS", "1")
    bar = progress.progress(range(2), desc="steps")
    assert isinstance(bar, tqdm.auto.tqdm) and not bar.disable
    assert list(bar) == [0, 1] and "steps" in capsys.readouterr().err


def test_repo_root_and_cache_dir(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.delenv("TVUTILS_ROOT", raising=False)
    monkeypatch.delenv("TVUTILS_CACHE", raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")
    assert paths.repo_root() == tmp_path
    assert paths.cache_dir("vit") == tmp_path / "_cache" / "vit" and (tmp_path / "_cache" / "vit").is_dir()
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path / "elsewhere"))
    assert paths.cache_dir("lm") == tmp_path / "elsewhere" / "lm"
