"""Stand-in run of 12_icl_mechanism_pruning's ``full`` profile: its shapes (M₁ = 10, M₂ = 40, d = 50, GPT-2
3 × 2 × 64), few seeds and steps, on the CPU (the stand-in GPT-2's recipe differs, so it gets its own cache entry)."""

SECONDS = 25  # CPU seconds of the 3-minute budget of all stand-ins (measured 7-10 s)


def overrides(tmp_path) -> dict:
    return {"seeds": [0], "gpt2_seeds": [0], "device": "cpu", "steps": 40, "n_test": 100, "fractions": [0.0, 0.5, 0.9],
            "alphas_prune": [0.8], "draws": 1, "gpt2_steps": 4, "gpt2_warmup": 2, "gpt2_n_test": 50,
            "gpt2_fractions": [0.0, 0.5], "gpt2_draws": 1}  # fmt: skip
