"""Stand-in for chapter 08's ``full`` profile (microsoft/phi-1_5 on a GPU; run by tests/test_full_profiles.py): a
randomly initialised PhiForCausalLM — the paper's architecture, with Phi-1.5's depth (24 blocks, so that the
profile's 12 trained top blocks exist), its partial rotary embedding and parallel attention/MLP, width 32 — saved
with safetensors beside a byte-level BPE tokenizer, both loaded offline through the same ``from_pretrained`` path
as the hub model; the profile's window shapes (64 + 32 tokens); two runs and a 3-point λ grid; three small synthetic books
(files, so no data is needed), 4 passages a book, one epoch per fine-tune; device cpu. Random weights reproduce no
science: the harness records the verdict without judging it (``TVUTILS_VERDICT_JUDGE=0``).
"""

from __future__ import annotations

import random
from pathlib import Path

# this stand-in's share of the 3-minute budget of all stand-ins (measured: 31 s in all, 8 s of it writing the
# stand-in, at load 4.5 on 2 cores)
SECONDS = 30  # CPU seconds of the 3-minute budget of all stand-ins (measured 15 s)
WORDS = ("the king prince hal falstaff crown war sir john tavern honour england lord heir father son night "
         "elizabeth darcy bennet ball letter sister pride estate marriage fortune netherfield manners").split()  # fmt: skip


def book_text(seed: int, n_words: int = 6000) -> str:
    """A deterministic pseudo-text: lines of 12 words drawn from a small vocabulary."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return "\n".join(" ".join(words[i : i + 12]) + "." for i in range(0, n_words, 12))


def write_tiny_phi(folder: Path, texts: list[str], layers: int = 24, hidden: int = 32) -> Path:
    """A random PhiForCausalLM (safetensors) and a BPE tokenizer trained on ``texts``, in the hub layout."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard-writing bar
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        partial_rotary_factor=0.5,  # as phi-1_5
        max_position_embeddings=2048,
    )
    PhiForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def overrides(tmp_path: Path) -> dict:
    """Write the stand-in model and books under ``tmp_path``; the papermill overrides for ``profile="full"``."""
    tmp_path = Path(tmp_path)
    books = {}
    for i, role in enumerate(("forget", "close", "far")):
        books[role] = tmp_path / f"book_{role}.txt"
        books[role].write_text(book_text(i), encoding="utf-8")
    model = write_tiny_phi(tmp_path / "tiny-phi", [p.read_text() for p in books.values()])
    return {
        "model": str(model),
        "device": "cpu",
        **{f"book_{role}": f"file:{path}" for role, path in books.items()},
        "n_passages": 4,
        "seeds": [0, 1],  # the code path over runs, with two
        "lambdas": [0.0, -0.5, -1.0],  # the code path of the grid, with one point inside
        "base_epochs": 1,
        "forget_epochs": 1,
        "alpha_epochs": 1,
        "eval_batch_size": 12,
        "n_boot": 100,
    }
