"""The local log-probability judge: a local instruct model's expected 1..10 score.

The assistant turn is prefilled with ``"Score: "`` and the score is the **expectation over
the numbers 1..10** of the next-token distribution: one forward pass, no sampling. Tokenizers
that split ``"10"`` into ``"1"`` + ``"0"`` (SmolLM2, Qwen2.5) are handled exactly: the same
pass runs on the prompt plus the token ``"1"``, so the last two positions give p("1") and
p(next | "1"); then p(10) = p("1")·p("0" | "1") and p(1) = p("1")·p(no digit | "1")
("11".."19" are out of range and dropped). The ten probabilities are renormalised over the
valid numbers; their total before renormalising is reported as ``coverage``.

Example:
    >>> judge = LocalJudge("qwen2.5-coder-0.5b")                         # doctest: +SKIP
    >>> judge.score("refusal", None, "Write a poem.", "Sorry, I can't.")  # doctest: +SKIP
    8.9
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.eval.judges.base import (
    PREFILL,
    SCALE,
    SYSTEM,
    JudgeBase,
    JudgeItem,
    Rating,
    expected_score,
    judge_prompt,
)
from steerlab.model.load import LoadedModel
from steerlab.util.progress import bar
from steerlab.util.seq import common_prefix


@dataclass(frozen=True)
class NumberTokens:
    """How the numbers of a scale (1..10) tokenize right after the judge's prefill.

    ``tails[i]`` are the tokens of the scale's i-th number after the prompt; each is one token,
    or two
    tokens starting with the shared ``extend`` token (``"1"`` of ``"10"``). ``digit_ids`` are
    the vocabulary ids whose text starts with a digit (a number going on). ``drop`` is how many
    trailing prompt tokens the numbers absorb (0 unless the prefill's last token merges).
    """

    tails: tuple[tuple[int, ...], ...]
    extend: int | None
    digit_ids: tuple[int, ...]
    drop: int = 0


def number_tokens(tokenizer: Any, prompt: str, numbers: Sequence[int] = SCALE) -> NumberTokens:
    """Work out :class:`NumberTokens` of ``numbers`` (1..10) for text ending in ``prompt``
    (raise if unsupported).

    Example:
        >>> nt = number_tokens(tok, "Score: ")                      # doctest: +SKIP
        >>> len(nt.tails), nt.extend is not None                    # doctest: +SKIP
        (10, True)
    """
    from steerlab.model.prompts import encode

    base = encode(tokenizer, prompt)
    full = [encode(tokenizer, prompt + str(n)) for n in numbers]
    keep = common_prefix([base, *full])
    tails = tuple(tuple(f[keep:]) for f in full)
    if any(not t or len(t) > 2 for t in tails):
        raise SteerlabError(f"judge tokenizer: numbers {numbers[0]}..{numbers[-1]} after the "
                            "prompt are not 1-2 tokens")
    firsts = {t[0] for t in tails if len(t) == 2}
    if len(firsts) > 1:
        raise SteerlabError("judge tokenizer: two-token numbers do not share a first token")
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    digits = tuple(i for i, tok in enumerate(vocab) if tok and str(tok)[0].isdigit())
    return NumberTokens(tails, next(iter(firsts), None), digits, len(base) - keep)


def number_probs(p_first: torch.Tensor, p_next: torch.Tensor | None,
                 layout: NumberTokens) -> list[float]:
    """p(score = n) for each number n of the layout's scale (unnormalised) from the next-token
    distribution(s).

    ``p_first`` is the distribution after the prompt; ``p_next`` the one after the prompt plus
    ``layout.extend`` (needed when some number takes two tokens).

    Example:
        >>> nt = NumberTokens(tuple((i,) for i in range(10)), None, ())
        >>> number_probs(torch.full((10,), 0.25), None, nt)[0]
        0.25
    """
    out: list[float] = []
    tail_firsts = {t[0] for t in layout.tails if len(t) == 2}
    for tail in layout.tails:
        if len(tail) == 2:
            assert p_next is not None
            out.append(float(p_first[tail[0]] * p_next[tail[1]]))
        elif tail[0] in tail_firsts:  # "1" that could go on to "10": it must stop here
            assert p_next is not None
            going_on = float(p_next[list(layout.digit_ids)].sum()) if layout.digit_ids else 0.0
            out.append(float(p_first[tail[0]]) * max(0.0, 1.0 - going_on))
        else:
            out.append(float(p_first[tail[0]]))
    return out


class LocalJudge(JudgeBase):
    """A local instruct model as a log-probability judge (one forward pass per batch).

    Example:
        >>> judge = LocalJudge("qwen2.5-coder-0.5b")                         # doctest: +SKIP
        >>> judge.score("refusal", None, "Write a poem.", "Sorry, I can't.")  # doctest: +SKIP
        8.9
    """

    def __init__(self, model: LoadedModel | str, *, batch_size: int = 4,
                 progress: bool = False):
        if isinstance(model, str):
            from steerlab.model.load import load_model

            model = load_model(model)
        self.lm = model
        self.name = f"local:{model.model_id}"
        self.batch_size = batch_size
        self.progress = progress
        self._layouts: dict[tuple[int, ...], NumberTokens] = {}

    def prompt_text(self, item: JudgeItem) -> str:
        """The full chat text fed to the judge, ending in the prefill ``"Score: "``."""
        return self.chat_text(judge_prompt(item))

    def chat_text(self, user: str, system: str = SYSTEM) -> str:
        """The chat text of one judge question: ``system``, the ``user`` turn, the prefill."""
        from steerlab.model.prompts import chat_prompt

        return chat_prompt(self.lm.tokenizer, user, PREFILL, system=system)

    def layout(self, numbers: Sequence[int] = SCALE) -> NumberTokens:
        """The judge tokenizer's :class:`NumberTokens` of ``numbers`` (computed once)."""
        key = tuple(numbers)
        if key not in self._layouts:
            generic = self.prompt_text(JudgeItem("trait", None, "Question?", "Answer."))
            self._layouts[key] = number_tokens(self.lm.tokenizer, generic, key)
        return self._layouts[key]

    def _row(self, text: str, numbers: Sequence[int]) -> list[int]:
        from steerlab.model.prompts import encode

        layout = self.layout(numbers)
        ids = encode(self.lm.tokenizer, text)
        ids = ids[:len(ids) - layout.drop]
        if encode(self.lm.tokenizer, text + str(numbers[-1])) != ids + list(layout.tails[-1]):
            raise SteerlabError("judge tokenizer: the score tokens merge with this prompt")
        return ids + ([layout.extend] if layout.extend is not None else [])

    def rate_many(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """Ratings of ``items`` on 1..10, ``batch_size`` prompts per forward pass."""
        return self.rate_prompts([judge_prompt(item) for item in items])

    def rate_prompts(self, prompts: Sequence[str], numbers: Sequence[int] = SCALE,
                     system: str = SYSTEM) -> list[Rating]:
        """The expected rating on ``numbers`` of each judge question (a user turn), with
        ``system`` and the prefill ``"Score: "``; ``batch_size`` prompts per forward pass."""
        from steerlab.scoring.batch import steered_logits

        numbers = tuple(numbers)
        layout = self.layout(numbers)
        rows = [self._row(self.chat_text(prompt, system), numbers) for prompt in prompts]
        out: list[Rating] = []
        starts = range(0, len(rows), self.batch_size)
        progress = bar(len(rows), "judge", unit="answer", enabled=self.progress)
        for start in starts:
            logits = steered_logits(self.lm, rows[start:start + self.batch_size], keep=2)
            progress.update(len(rows[start:start + self.batch_size]))
            probs = torch.softmax(logits, dim=-1).cpu()
            for row in probs:
                first, nxt = (row[-2], row[-1]) if layout.extend is not None else (row[-1], None)
                out.append(expected_score(number_probs(first, nxt, layout), numbers))
        progress.close()
        return out


