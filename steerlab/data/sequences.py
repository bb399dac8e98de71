"""Contrast items as token sequences under a model's tokenizer and chat format.

The answer token of an A/B item is found by tokenizing the prompt followed by each answer and
taking the first token where the two sequences differ. For CAA's ``"(A)"``/``"(B)"`` on a
tokenizer that splits ``"("`` off, that is the letter after ``"("`` (the CAA read position); if
a tokenizer merges ``"(A"`` into one token, it is that token — the read position adapts instead
of silently reading the wrong token.

Example:
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> ab = ab_sequences(tiny_tokenizer(), ABItem("Q?", "(A)", "(B)"))
    >>> ab.matching_id != ab.not_matching_id
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.data.formats import ABItem
from steerlab.errors import SteerlabError
from steerlab.model.prompts import Message, Prompt, chat_prompt, encode, instruction_length
from steerlab.util.seq import common_prefix


@dataclass(frozen=True)
class ABSequences:
    """Token ids for one A/B item: ``prefix`` ends right before the answer token."""

    prefix: list[int]
    matching_id: int
    not_matching_id: int
    instruction_length: int

    @property
    def matching(self) -> list[int]:
        """prefix + matching answer token (CAA reads the activation at its last position)."""
        return [*self.prefix, self.matching_id]

    @property
    def not_matching(self) -> list[int]:
        return [*self.prefix, self.not_matching_id]


def question_prompt(question: str, context: Sequence[Message] = ()) -> Prompt:
    """The prompt of an item's question: the question as one user turn, after the earlier
    ``context`` turns (e.g. few-shot examples: user, assistant, user, assistant, ...) if any.

    Example:
        >>> question_prompt("Q?")
        'Q?'
        >>> [m["role"] for m in question_prompt("Q?", [{"role": "user", "content": "E?"},
        ...                                             {"role": "assistant", "content": "e"}])]
        ['user', 'assistant', 'user']
    """
    if not context:
        return question
    return [*({"role": m["role"], "content": m["content"]} for m in context),
            {"role": "user", "content": question}]


def ab_sequences(tokenizer: Any, item: ABItem, system: str | None = None,
                 context: Sequence[Message] = ()) -> ABSequences:
    """Locate the answer token of an A/B item under this tokenizer and chat format
    (``context``: earlier chat turns before the question, see :func:`question_prompt`)."""
    prompt = question_prompt(item.question, context)
    a = encode(tokenizer, chat_prompt(tokenizer, prompt, item.matching.strip(), system))
    b = encode(tokenizer, chat_prompt(tokenizer, prompt, item.not_matching.strip(), system))
    common = common_prefix((a, b))
    if common >= min(len(a), len(b)):
        raise SteerlabError(f"answers {item.matching!r} and {item.not_matching!r} tokenize to "
                            "sequences that do not differ")
    return ABSequences(prefix=a[:common], matching_id=a[common], not_matching_id=b[common],
                       instruction_length=min(instruction_length(tokenizer, prompt, system),
                                              common))


@dataclass(frozen=True)
class AnswerSequence:
    """Token ids of a chat prompt followed by one whole answer (open-answer scoring).

    ``prefix`` is prompt + answer; its last ``answer_length`` tokens are the answer.
    """

    prefix: list[int]
    prompt_length: int
    instruction_length: int

    @property
    def answer_length(self) -> int:
        return len(self.prefix) - self.prompt_length


def answer_sequences(tokenizer: Any, item: ABItem, system: str | None = None,
                     context: Sequence[Message] = ()) -> tuple[AnswerSequence, AnswerSequence]:
    """The matching and not-matching answers of ``item`` as assistant replies (``context``:
    earlier chat turns before the question, see :func:`question_prompt`).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> m, n = answer_sequences(tiny_tokenizer(), ABItem("Q?", "yes", "no"))
        >>> m.prefix[:m.prompt_length] == n.prefix[:n.prompt_length], m.answer_length > 0
        (True, True)
    """
    question = question_prompt(item.question, context)
    prompt = encode(tokenizer, chat_prompt(tokenizer, question, system=system))
    instr = instruction_length(tokenizer, question, system)
    out = []
    for answer in (item.matching, item.not_matching):
        full = encode(tokenizer, chat_prompt(tokenizer, question, answer.strip(),
                                             system=system))
        if full[: len(prompt)] != prompt or len(full) == len(prompt):
            raise SteerlabError(f"answer {answer[:30]!r} does not extend the prompt's tokens")
        out.append(AnswerSequence(full, len(prompt), instr))
    return out[0], out[1]
