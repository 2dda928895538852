"""Stand-in run of 11_icl_out_of_domain's ``full`` profile: its shapes (M₁ = 10, M₂ = 40, d = 50, GPT-2 3 × 2 × 64), few seeds and steps, on the CPU (the stand-in GPT-2's recipe differs, so it gets its own cache entry)."""

SECONDS = 25  # CPU seconds of the 3-minute budget of all stand-ins (measured 7-10 s)


def overrides(tmp_path) -> dict:
    return {"seeds": [0], "device": "cpu", "steps": 40, "n_test": 100, "S1s": [0.9, 1.1],
            "alphas_test": [0.4, 0.8], "lengths": [2, 8, 32], "gpt2_steps": 4, "gpt2_warmup": 2, "gpt2_n_test": 50,
            "gpt2_lengths": [4, 16]}  # fmt: skip
