"""Stand-in run of 10_icl_in_domain's ``full`` profile: its shapes (M₁ = 10, M₂ = 40, d = 50), few seeds and steps."""

SECONDS = 25  # CPU seconds of the 3-minute budget of all stand-ins (measured 7-10 s)


def overrides(tmp_path) -> dict:
    # nothing to write: the chapter has no model or data files; only its run is shrunk
    return {"seeds": [0], "steps": 40, "n_test": 100, "alphas_test": [0.4, 0.8], "lengths": [2, 8, 32],
            "alphas_train": [0.4, 0.8], "max_steps": 40, "task_sets": [["cycle", 10], ["both-ways cycle", 20],
            ["non-covering", 20]]}  # fmt: skip
