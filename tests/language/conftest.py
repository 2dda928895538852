"""Fixtures of the language tests: a tiny random Llama written in the Hugging Face layout, loaded through the same
``load_model`` path as a hub model such as microsoft/phi-1_5, and token windows of a small corpus."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tvutils.language import models as lmodels

CORPUS = [
    "So shaken as we are, so wan with care, find we a time for frighted peace to pant.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
    "My liege, this haste was hot in question, and many limits of the charge set down but yesternight.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False)
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    model, tokenizer = lmodels.load_model(str(tiny_dir))
    return model, tokenizer


@pytest.fixture(scope="module")
def windows(tiny):
    _, tokenizer = tiny
    ids = lmodels.encode(tokenizer, " ".join(CORPUS * 3))
    assert len(ids) >= 6 * 16
    return torch.tensor([ids[i * 16 : i * 16 + 16] for i in range(6)])  # (6, 16)


@pytest.fixture(scope="module")
def tiny_phi(tmp_path_factory):
    folder = _standin().write_tiny_phi(tmp_path_factory.mktemp("tiny_phi"), CORPUS * 4, layers=2, hidden=32)
    model, tokenizer = lmodels.load_model(str(folder))
    ids = lmodels.encode(tokenizer, " ".join(CORPUS * 3))
    return model, tokenizer, torch.tensor([ids[i * 14 : i * 14 + 14] for i in range(6)])


def _standin():
    """Chapter 08's stand-in module (tests/standins/08_llm_unlearning.py), which writes the tiny Phi."""
    path = Path(__file__).resolve().parents[1] / "standins" / "08_llm_unlearning.py"
    spec = importlib.util.spec_from_file_location("standin_llm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
