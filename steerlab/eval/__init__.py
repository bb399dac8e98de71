"""Evaluation harness (``steerlab eval ...``): sweeps, sample efficiency, OOD, perplexity,
capabilities, sentiment/toxicity and model size, with a resumable results store.

Example:
    >>> from steerlab.scoring.sweep import sweep_ab                      # doctest: +SKIP
    >>> res = sweep_ab(lm, val, vec, layers=[8, 12], values=[-2, 0, 2])  # doctest: +SKIP
"""
