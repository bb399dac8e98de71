"""Readouts: what a scorer takes from the logits of one batched forward.

A readout says how many trailing positions' logits a batch needs (``keep``) and turns them
into one tuple of numbers per row. Rows are identified by their index into the readout's own
sequences, so the same readout serves a plain batch and a sweep batch whose rows repeat each
item once per coefficient.

* :class:`ABReadout` — CAA letters: from the last position, (score, propensity, p_matching,
  p_not_matching) with score = p(m) / (p(m) + p(n)) and propensity = logit(m) − logit(n).
* :class:`AnswerReadout` — whole answers: (total log-probability of the row's answer tokens,).
* :class:`TokenNLL` — teacher-forced negative log-likelihood of each row's tail, per token.

Example:
    >>> import torch
    >>> from steerlab.data.sequences import ABSequences
    >>> readout = ABReadout([ABSequences([1, 2], matching_id=3, not_matching_id=4,
    ...                                  instruction_length=1)])
    >>> logits = torch.zeros(1, 1, 6)
    >>> logits[0, -1, 3] = 2.0
    >>> [round(x, 3) for x in readout.read([0], logits)[0]][:2]
    [0.881, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from steerlab.data.sequences import ABSequences, AnswerSequence
from steerlab.errors import SteerlabError

Row = tuple[float, ...]


class Readout(Protocol):
    """What :func:`steerlab.scoring.batch.read_batches` needs from a readout."""

    def rows(self) -> Sequence[Sequence[int]]:
        """The token ids of every row (the readout's own order)."""
        ...

    def keep(self, indices: Sequence[int]) -> int:
        """How many trailing positions' logits a batch of these rows needs."""
        ...

    def read(self, indices: Sequence[int], logits: torch.Tensor) -> list[Row]:
        """One tuple per row of the batch from its ``[B, keep, V]`` float logits."""
        ...


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position: ``logits`` [B, T, V] predict ``targets`` [B, T].

    Example:
        >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[0, 3]])).exp().tolist()
        [[0.25, 0.25]]
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(-1, targets.to(logprobs.device)[..., None].long())[..., 0]


def ab_rows(last: torch.Tensor, matching: torch.Tensor, other: torch.Tensor) -> list[Row]:
    """(score, propensity, p_matching, p_not_matching) per row from last-position logits.

    Example:
        >>> ab_rows(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([1]))[0][:2]
        (0.5, 0.0)
    """
    logprobs = torch.log_softmax(last.float(), dim=-1)
    rows = torch.arange(last.shape[0], device=last.device)
    match, not_match = matching.to(last.device), other.to(last.device)
    lp_m, lp_n = logprobs[rows, match], logprobs[rows, not_match]
    score = torch.sigmoid(lp_m - lp_n)
    prop = last[rows, match].float() - last[rows, not_match].float()
    return list(zip(score.tolist(), prop.tolist(), lp_m.exp().tolist(), lp_n.exp().tolist(),
                    strict=True))


class ABReadout:
    """The CAA letter readout of tokenized A/B items (:class:`ABSequences`)."""

    def __init__(self, seqs: Sequence[ABSequences]):
        for i, seq in enumerate(seqs):
            if not isinstance(seq, ABSequences):
                raise SteerlabError(f"A/B readout: row {i} is {type(seq).__name__}, not an "
                                    "A/B item's sequences")
        self.seqs = list(seqs)

    def rows(self) -> list[list[int]]:
        return [s.prefix for s in self.seqs]

    def keep(self, indices: Sequence[int]) -> int:
        return 1

    def read(self, indices: Sequence[int], logits: torch.Tensor) -> list[Row]:
        matching = torch.tensor([self.seqs[i].matching_id for i in indices])
        other = torch.tensor([self.seqs[i].not_matching_id for i in indices])
        return ab_rows(logits[:, -1], matching, other)


class AnswerReadout:
    """Total log-probability of each row's answer tokens (:class:`AnswerSequence`).

    Rows are left-padded, so every row's answer ends the row: with ``keep`` = longest answer
    + 1, position ``keep − 1 − a + j`` predicts answer token j of an answer of length a.
    """

    def __init__(self, seqs: Sequence[AnswerSequence]):
        for i, seq in enumerate(seqs):
            if not isinstance(seq, AnswerSequence):
                raise SteerlabError(f"answer readout: row {i} is {type(seq).__name__}, not an "
                                    "answer sequence")
        self.seqs = list(seqs)

    def rows(self) -> list[list[int]]:
        return [s.prefix for s in self.seqs]

    def keep(self, indices: Sequence[int]) -> int:
        return max(self.seqs[i].answer_length for i in indices) + 1

    def read(self, indices: Sequence[int], logits: torch.Tensor) -> list[Row]:
        longest = logits.shape[1] - 1
        targets = torch.zeros(len(indices), longest, dtype=torch.long)
        counted = torch.zeros(len(indices), longest, dtype=torch.bool)
        for row, i in enumerate(indices):
            seq = self.seqs[i]
            answer = seq.prefix[seq.prompt_length:]
            targets[row, longest - len(answer):] = torch.tensor(answer)
            counted[row, longest - len(answer):] = True
        picked = token_logprobs(logits[:, :-1], targets)
        totals = (picked * counted.to(picked.device)).sum(-1)
        return [(float(t),) for t in totals]


class TokenNLL:
    """Teacher-forced NLL (nats) of ``rows[i][starts[i]:]``, one value per scored token.

    Token t is scored from the logits at t − 1, so every start must be at least 1.
    """

    def __init__(self, rows: Sequence[Sequence[int]], starts: Sequence[int]):
        if len(rows) != len(starts):
            raise SteerlabError(f"token NLL: {len(rows)} rows but {len(starts)} starts")
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            if not 1 <= start < len(row):
                raise SteerlabError(f"token NLL: row {i}: start {start} must be in "
                                    f"[1, {len(row) - 1}] (row of {len(row)} tokens)")
        self._rows = [list(r) for r in rows]
        self.starts = list(starts)

    def rows(self) -> list[list[int]]:
        return self._rows

    def keep(self, indices: Sequence[int]) -> int:
        return max(len(self._rows[i]) - self.starts[i] for i in indices) + 1

    def read(self, indices: Sequence[int], logits: torch.Tensor) -> list[Row]:
        longest = logits.shape[1] - 1
        targets = torch.zeros(len(indices), longest, dtype=torch.long)
        for row, i in enumerate(indices):
            tail = self._rows[i][self.starts[i]:]
            targets[row, longest - len(tail):] = torch.tensor(tail)
        picked = -token_logprobs(logits[:, :-1], targets)
        return [tuple(picked[row, longest - (len(self._rows[i]) - self.starts[i]):].tolist())
                for row, i in enumerate(indices)]
