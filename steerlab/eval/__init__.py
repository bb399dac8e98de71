"""Evaluation: runs (settings, resumable cells), the results store, statistics tables, plots,
judges, and one protocol per study (``steerlab.eval.protocols``).

Example:
    >>> from steerlab.eval.protocols.sweep import SweepConfig, run      # doctest: +SKIP
    >>> run(SweepConfig(out="runs/r", data="caa:refusal", unit="strength",
    ...                 values=[-0.4, 0, 0.4]))                           # doctest: +SKIP
"""
