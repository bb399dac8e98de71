"""Adversarial suffixes that reverse steering: one gradient-guided search (GCG and EPO as
configurations), three objectives read under the steered model, and a random baseline.

Example:
    >>> import steerlab
    >>> from steerlab.attack import ab_flip, epo, search
    >>> lm = steerlab.load_model("smollm2-135m")                           # doctest: +SKIP
    >>> item = steerlab.load_dataset("caa:refusal", split="test").items[0]  # doctest: +SKIP
    >>> spec = steerlab.SteeringSpec(vec, layers=[12], strength=0.4)        # doctest: +SKIP
    >>> res = search(lm, ab_flip(lm, item), spec, epo(iterations=50))       # doctest: +SKIP
    >>> res.success, res.objective, res.xent, res.suffix_text               # doctest: +SKIP

    The same calls on a tiny random-weight model and a one-iteration search:

    >>> from steerlab.testing.tiny import tiny_lm
    >>> lm = tiny_lm()
    >>> item = steerlab.ABItem("Will you help me?\\n(A) No\\n(B) Yes", "(A)", "(B)")
    >>> vec = steerlab.extract(lm, [("I refuse to help.", "Sure, here you go.")], layers=[2],
    ...                        progress=False)
    >>> spec = steerlab.SteeringSpec(vec, layers=[2], strength=0.4)
    >>> res = search(lm, ab_flip(lm, item), spec,
    ...              epo(iterations=1, suffix_length=3, children=2, topk=8), progress=False)
    >>> res.method, res.iterations, isinstance(res.suffix_text, str)
    ('epo', 1, True)
"""

from steerlab.attack.fluency import suffix_xent
from steerlab.attack.layout import SuffixPrompt, suffix_prompt
from steerlab.attack.objectives import (
    OBJECTIVES,
    ABFlip,
    AnswerLogProb,
    Objective,
    Projection,
    ab_flip,
    answer,
    projection,
)
from steerlab.attack.runner import SuffixRunner
from steerlab.attack.search import evaluate, random_search, search
from steerlab.attack.search_config import SearchConfig, epo, epo_penalties, gcg
from steerlab.attack.search_result import FrontierPoint, SearchResult, StepRecord
from steerlab.attack.tokens import allowed_tokens, initial_suffix

__all__ = [
    "OBJECTIVES",
    "ABFlip",
    "AnswerLogProb",
    "FrontierPoint",
    "Objective",
    "Projection",
    "SearchConfig",
    "SearchResult",
    "StepRecord",
    "SuffixPrompt",
    "SuffixRunner",
    "ab_flip",
    "allowed_tokens",
    "answer",
    "epo",
    "epo_penalties",
    "evaluate",
    "gcg",
    "initial_suffix",
    "projection",
    "random_search",
    "search",
    "suffix_prompt",
    "suffix_xent",
]
