"""The ICLR 2025 paper's theory model: its data, the one-layer learner of eq. (3), training, merges, theorems."""
