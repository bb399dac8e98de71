"""Token log-likelihoods of text under optional steering (perplexity, fluency).

Example:
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> nll = continuation_nll(lm, [[5, 6, 7, 8]], [2])
    >>> len(nll[0])                                  # tokens 7 and 8
    2
"""

from __future__ import annotations

from collections.abc import Sequence

from steerlab.model.load import LoadedModel
from steerlab.scoring.batch import read_batches
from steerlab.scoring.readout import TokenNLL
from steerlab.steering.spec import Steering


def continuation_nll(lm: LoadedModel, rows: Sequence[Sequence[int]], starts: Sequence[int],
                     steering: Steering = None, *,
                     prompt_lengths: Sequence[int] | None = None, batch_size: int = 4,
                     progress: bool = False, desc: str = "nll") -> list[list[float]]:
    """Negative log-likelihood (nats) of ``rows[i][starts[i]:]``, token by token.

    Token t of a row is scored from the logits at position t − 1 (teacher forcing), so every
    ``starts[i]`` must be at least 1. ``prompt_lengths[i]`` (real tokens) is what the
    ``prompt`` / ``generation`` positions of ``steering`` treat as row i's prompt.

    Example:
        >>> continuation_nll(lm, [[1, 2, 3]], [1])[0]          # doctest: +SKIP
        [3.91, 2.07]
    """
    nll = read_batches(lm, TokenNLL(rows, starts), steering, prompt_lengths=prompt_lengths,
                       batch_size=batch_size, progress=progress, desc=desc)
    return [list(row) for row in nll]
