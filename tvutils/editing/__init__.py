"""Model-agnostic editing: task vectors of any torch model, their algebra and variants, and merges of checkpoints."""
