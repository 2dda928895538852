"""The chapters' own infrastructure: parameters, verdicts, figures, progress bars, paths and caches."""
