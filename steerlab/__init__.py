"""steerlab: contrastive activation engineering for Hugging Face decoder models.

Example:
    >>> import steerlab                                                  # doctest: +SKIP
    >>> lm = steerlab.load_model("smollm2-135m")                         # doctest: +SKIP
    >>> train = steerlab.load_dataset("builtin:optimism", split="train")  # doctest: +SKIP
    >>> vec = steerlab.extract(lm, train, method="mean_diff", layers=range(8, 21))  # doctest: +SKIP
    >>> with steerlab.steer(lm, vec, layers=[12], strength=0.5):          # doctest: +SKIP
    ...     ...
"""

from steerlab.data import ABItem, ContrastPair, Dataset, load_dataset, load_pairs
from steerlab.errors import SteerlabError
from steerlab.extraction import METHODS, calibrate, extract
from steerlab.model.arch import find_blocks
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.ab import ABResult, score_ab, score_answers
from steerlab.scoring.generate import Sampling, generate
from steerlab.scoring.sweep import score_coefficients, sweep_ab, sweep_answers
from steerlab.steering.hooks import attach, steer
from steerlab.steering.spec import SteeringSpec
from steerlab.util.parse import resolve_layers
from steerlab.vector import SteeringVector
from steerlab.version import __version__

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
    "score_coefficients",
    "steer",
    "sweep_ab",
    "sweep_answers",
]
