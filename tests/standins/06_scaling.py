"""Stand-in run of 06_scaling's ``full`` profile: the same code path (every sweep, the device argument, the
bounds and exponents of the verdict), at sizes and seed counts small enough for a CPU in about half a minute."""

SECONDS = 40  # CPU seconds of the 3-minute budget of all stand-ins (measured 21-25 s)


def overrides(tmp_path) -> dict:
    """Papermill overrides for ``profile="full"``: nothing to write (the chapter trains its own models)."""
    return {
        "device": "cpu",
        "seeds": [0, 1],
        "fit_seeds": [100],
        "m": 16,
        "max_steps": 300,
        "n_test": 100,
        "n_stop": 100,
        "d_sizes": [16, 32],
        "M_fixed": 10,
        "M_sizes": [5, 10],
        "M_sweep_d": 16,
        "add_lam_step": 0.05,
        "neg_alphas": [-1.0, -0.3],
        "neg_lam_extent": [0.01, 200.0],
        "neg_lam_points": 40,
        "neg_refine": 2,
        "eps_sizes": [0.2, 0.1],
        "ood_step": 0.5,
        "m_sizes": [16, 32],
        "cor2_eps_sizes": [0.2, 0.1],
        "cor2_m": 16,
    }
