import torch

from tvutils.chapter.runtime import fingerprint, fix_threads, versions


def test_fix_threads_sets_torch_and_the_fingerprint_records_it():
    before = torch.get_num_threads()
    try:
        assert fix_threads(1) == 1 and torch.get_num_threads() == 1
        assert fingerprint()["threads"] == 1
        fix_threads(2)
        assert fingerprint()["threads"] == 2  # a cache key made with 2 threads differs from one made with 1
    finally:
        torch.set_num_threads(before)


def test_versions_name_torch_and_absent_libraries():
    v = versions()
    assert v["torch"].startswith(torch.__version__.split("+")[0])
    assert set(v) >= {"python", "torch", "numpy", "transformers"}


def test_bad_thread_count():
    import pytest

    with pytest.raises(ValueError, match="≥ 1"):
        fix_threads(0)
