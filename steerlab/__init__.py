"""steerlab: contrastive activation engineering for Hugging Face decoder models.

The public names below load on first use (PEP 562), so ``import steerlab`` and the command
line's ``--help`` do not pay for torch and transformers until something needs them.

Example:
    >>> import steerlab
    >>> lm = steerlab.load_model("smollm2-135m")                         # doctest: +SKIP
    >>> train = steerlab.load_dataset("builtin:optimism", split="train")
    >>> vec = steerlab.extract(lm, train, method="mean_diff", layers=range(8, 21))  # doctest: +SKIP
    >>> with steerlab.steer(lm, vec, layers=[12], strength=0.5):          # doctest: +SKIP
    ...     ...

    The same calls on a tiny random-weight model (4 layers), as the tests run them:

    >>> from steerlab.testing.tiny import tiny_lm
    >>> lm = tiny_lm()
    >>> vec = steerlab.extract(lm, train.head(16), method="mean_diff", layers=range(1, 4),
    ...                        progress=False)
    >>> with steerlab.steer(lm, vec, layers=[2], strength=0.5):
    ...     texts = steerlab.generate(lm, "Tell me about your day.", max_new_tokens=4)
    >>> len(texts)
    1
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steerlab.version import __version__

#: public name → the module that defines it
_PUBLIC = {
    "ABItem": "steerlab.data",
    "ContrastPair": "steerlab.data",
    "Dataset": "steerlab.data",
    "load_dataset": "steerlab.data",
    "load_pairs": "steerlab.data",
    "SteerlabError": "steerlab.errors",
    "METHODS": "steerlab.extraction",
    "calibrate": "steerlab.extraction",
    "extract": "steerlab.extraction",
    "find_blocks": "steerlab.model.arch",
    "LoadedModel": "steerlab.model.load",
    "load_model": "steerlab.model.load",
    "ABResult": "steerlab.scoring.ab",
    "score_ab": "steerlab.scoring.ab",
    "score_answers": "steerlab.scoring.ab",
    "Sampling": "steerlab.scoring.generate",
    "generate": "steerlab.scoring.generate",
    "score_values": "steerlab.scoring.sweep",
    "score_coefficients": "steerlab.scoring.sweep",  # deprecated name of score_values
    "sweep_ab": "steerlab.scoring.sweep",
    "sweep_answers": "steerlab.scoring.sweep",
    "attach": "steerlab.steering.hooks",
    "steer": "steerlab.steering.hooks",
    "SteeringSpec": "steerlab.steering.spec",
    "resolve_layers": "steerlab.util.parse",
    "SteeringVector": "steerlab.vector",
}

__all__ = [
    "METHODS",
    "ABItem",
    "ABResult",
    "ContrastPair",
    "Dataset",
    "LoadedModel",
    "Sampling",
    "SteeringSpec",
    "SteeringVector",
    "SteerlabError",
    "__version__",
    "attach",
    "calibrate",
    "extract",
    "find_blocks",
    "generate",
    "load_dataset",
    "load_model",
    "load_pairs",
    "resolve_layers",
    "score_ab",
    "score_answers",
    "score_values",
    "steer",
    "sweep_ab",
    "sweep_answers",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from steerlab.data import ABItem, ContrastPair, Dataset, load_dataset, load_pairs
    from steerlab.errors import SteerlabError
    from steerlab.extraction import METHODS, calibrate, extract
    from steerlab.model.arch import find_blocks
    from steerlab.model.load import LoadedModel, load_model
    from steerlab.scoring.ab import ABResult, score_ab, score_answers
    from steerlab.scoring.generate import Sampling, generate
    from steerlab.scoring.sweep import score_values, sweep_ab, sweep_answers
    from steerlab.steering.hooks import attach, steer
    from steerlab.steering.spec import SteeringSpec
    from steerlab.util.parse import resolve_layers
    from steerlab.vector import SteeringVector
