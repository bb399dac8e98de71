"""What an adversarial suffix search maximises: three objectives, read under the steered model.

Every objective is "higher = the steered-for behaviour is more reversed", in nats (or residual
units for ``projection``), and is read from one forward of ``before + suffix + after
[+ target]`` with the steering context active (the search passes it; steering with
``positions="all"`` covers the suffix tokens too, ``after_instruction`` does not):

* :func:`ab_flip` — ``log p(not-matching letter) − log p(matching letter)`` at the CAA read
  position (the assistant turn prefilled up to the letter).
* :func:`answer` — the mean per-token log-probability of the not-matching open answer (the
  negative of GCG's target loss with that answer as the target).
* :func:`projection` — minus the projection ``h · v̂`` of the residual stream at the last
  prompt token onto the vector's direction at a layer *above* the steered one (at the steered
  layer the added vector itself dominates the projection).

**Success** (the same rule for all three): the steered model with the suffix scores at least
what the *unsteered* model scores on the prompt without a suffix — the suffix pushes the
steered behaviour back past the unsteered one. For ``ab_flip`` that is ``margin_steered(suffix)
≥ margin_unsteered(no suffix)`` with margin = log p(not matching) − log p(matching);
:attr:`SearchResult.answer_flipped` additionally says whether the letter itself flipped
(margin > 0).

Example:
    >>> from steerlab.data import ABItem
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> obj = ab_flip(tiny_tokenizer(), ABItem("Yes or no?\\n(A) Yes\\n(B) No", "(A)", "(B)"))
    >>> obj.name, obj.n_logits
    ('ab_flip', 1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.attack.layout import SuffixPrompt, suffix_prompt
from steerlab.data.formats import ABItem
from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.scoring.readout import token_logprobs
from steerlab.util.vocabulary import Site
from steerlab.vector import SteeringVector


def _tokenizer(lm_or_tokenizer: Any) -> Any:
    return lm_or_tokenizer.tokenizer if isinstance(lm_or_tokenizer, LoadedModel) else \
        lm_or_tokenizer


@dataclass(frozen=True)
class Objective:
    """Base of the objectives: a prompt layout and how to read the value from one forward.

    ``n_logits``: how many trailing positions' logits :meth:`value` reads; ``read_layer`` /
    ``read_site``: where the residual stream is read at the last prompt token (projection).
    """

    prompt: SuffixPrompt

    name = "objective"

    @property
    def n_logits(self) -> int:
        return 0

    @property
    def read_layer(self) -> int | None:
        return None

    @property
    def read_site(self) -> Site:
        return "block_output"

    def value(self, logits: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        """``[B]`` objective values from the trailing logits ``[B, n_logits, V]`` and the
        residual ``[B, d]`` read at :attr:`read_layer` (None when not needed)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ABFlip(Objective):
    """``log p(not matching) − log p(matching)`` for the answer letter (see :func:`ab_flip`)."""

    matching_id: int = -1
    not_matching_id: int = -1

    name = "ab_flip"

    @property
    def n_logits(self) -> int:
        return 1

    def value(self, logits: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        """Example:
            >>> obj = ABFlip(None, matching_id=0, not_matching_id=1)
            >>> float(obj.value(torch.tensor([[[0.0, 2.0, 0.0]]]), None)[0])
            2.0
        """
        assert logits is not None
        logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        return logprobs[:, self.not_matching_id] - logprobs[:, self.matching_id]


@dataclass(frozen=True)
class AnswerLogProb(Objective):
    """Mean log-probability of the target answer's tokens (see :func:`answer`)."""

    name = "answer"

    @property
    def n_logits(self) -> int:
        return len(self.prompt.target)

    def value(self, logits: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        assert logits is not None
        target = torch.tensor(self.prompt.target, device=logits.device)
        return token_logprobs(logits, target.expand(logits.shape[0], -1)).mean(-1)


@dataclass(frozen=True)
class Projection(Objective):
    """Minus the projection onto a unit direction at ``layer`` (see :func:`projection`)."""

    layer: int = 0
    direction: torch.Tensor | None = None  # unit, [d]
    site: Site = "block_output"

    name = "projection"

    @property
    def read_layer(self) -> int | None:
        return self.layer

    @property
    def read_site(self) -> Site:
        return self.site

    def value(self, logits: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        """Example:
            >>> obj = Projection(None, layer=3, direction=torch.tensor([1.0, 0.0]))
            >>> obj.value(None, torch.tensor([[2.0, 5.0]])).tolist()
            [-2.0]
        """
        assert hidden is not None and self.direction is not None
        return -(hidden.float() @ self.direction.to(hidden.device, torch.float32))


def ab_flip(lm: Any, item: ABItem, *, separator: str = "", system: str | None = None) -> ABFlip:
    """The A/B flip objective of one CAA item (``matching`` = the steered-for letter).

    ``lm``: a :class:`~steerlab.model.load.LoadedModel` or its tokenizer. The read position is
    the one :func:`steerlab.data.sequences.ab_sequences` finds (the letter after ``"("``).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> obj = ab_flip(tok, ABItem("Agree?\\n(A) Agree\\n(B) Disagree", "(A)", "(B)"))
        >>> obj.matching_id != obj.not_matching_id
        True
    """
    tok = _tokenizer(lm)
    prompt = suffix_prompt(tok, item.question, answers=(item.matching, item.not_matching),
                           separator=separator, system=system)
    matching, not_matching = prompt.answer_ids
    return ABFlip(prompt, matching_id=int(matching), not_matching_id=int(not_matching))


def answer(lm: Any, item: ABItem, *, separator: str = "", system: str | None = None
           ) -> AnswerLogProb:
    """The open-answer objective: log-probability of ``item.not_matching`` as the reply.

    ``item`` is an open-answer item (``Dataset.open_answers()``): the question stem and the two
    replies in full.

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> obj = answer(tiny_tokenizer(), ABItem("Would you lie?", "No, never.", "Yes, I would."))
        >>> obj.n_logits == len(obj.prompt.target)
        True
    """
    prompt = suffix_prompt(_tokenizer(lm), item.question, target=item.not_matching,
                           separator=separator, system=system)
    return AnswerLogProb(prompt)


def projection(lm: Any, item: ABItem | str, vector: SteeringVector, layer: int, *,
               assistant_prefix: str = "", separator: str = "",
               system: str | None = None) -> Projection:
    """Push down the projection onto ``vector`` read at block ``layer`` (last prompt token).

    The direction is the vector's at ``layer`` when it has one, else at its nearest layer below
    (the steered direction, as the residual stream carries it up), normalised. ``layer``
    must lie above every steered layer (the search checks). ``item``: an item (its question)
    or the question text.

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> vec = SteeringVector.from_directions({1: torch.ones(64)})
        >>> projection(tiny_tokenizer(), "Hi?", vec, layer=3).read_layer
        3
    """
    question = item.question if isinstance(item, ABItem) else str(item)
    below = [k for k in vector.layers if k <= layer]
    source = layer if layer in vector.directions else (max(below) if below else None)
    if source is None:
        raise SteerlabError(f"vector has no direction at or below layer {layer}; it has layers "
                            f"{vector.layers}")
    raw = vector.directions[source]
    if raw.ndim != 1 or float(raw.norm()) == 0.0:
        raise SteerlabError(f"layer {source}: projection needs one non-zero direction")
    prompt = suffix_prompt(_tokenizer(lm), question, assistant_prefix=assistant_prefix,
                           separator=separator, system=system)
    return Projection(prompt, layer=int(layer), direction=raw / raw.norm(), site=vector.site)


#: Objective factories by name (``ab_flip`` and ``answer`` take ``(lm, item)``; ``projection``
#: also needs ``vector=`` and ``layer=``).
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "ab_flip": ab_flip,
    "answer": answer,
    "projection": projection,
}
