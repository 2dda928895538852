"""The language case study: books as passages, causal language models, LoRA task vectors, unlearning metrics."""
