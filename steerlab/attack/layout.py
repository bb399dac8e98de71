"""Where an adversarial suffix goes: the token layout of one prompt with a suffix slot.

The suffix is appended to the user's question *inside* the chat template, so it is part of the
user turn, before the assistant header and any assistant prefill::

    before  = <system turn> <|im_start|>user\\n {question}{separator}
    suffix  = s_0 … s_{L-1}                                   (the optimised tokens)
    after   = <|im_end|>\\n<|im_start|>assistant\\n (prefill, e.g. "(" of "(A)")
    target  = the scored answer tokens (open-answer objective only)

``before`` is the same for every candidate, so the search runs it once into a KV cache.
The layout is found by rendering the template around a marker and splitting the text there;
``before`` and ``after`` are tokenized separately, and :meth:`SuffixPrompt.stable` checks that
the whole text (question + suffix + the rest) re-tokenizes to exactly these ids, so a suffix
that the search reports is one a user can paste as text.

Example:
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> p = suffix_prompt(tiny_tokenizer(), "Is the sky blue?", assistant_prefix="(")
    >>> p.user_text(" x x")
    'Is the sky blue? x x'
    >>> p.prompt_length(2) == len(p.before) + 2 + len(p.after)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.model.prompts import chat_messages, chat_prompt, encode
from steerlab.util.seq import common_prefix

#: Stands in for the suffix while the chat template is rendered (then split on).
MARK = "<<<steerlab-suffix>>>"


@dataclass(frozen=True)
class SuffixPrompt:
    """The token layout of one prompt with a suffix slot (see the module docstring).

    ``tail_text`` / ``tail_ids`` are what follows the suffix in the re-tokenisation check:
    the rest of the prompt plus, for A/B items, the answer text (its first tokens are the
    prefill in ``after``) and, for open answers, the answer (``target``).
    """

    question: str
    separator: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    target: tuple[int, ...]
    text_before: str
    tail_text: str
    tail_ids: tuple[int, ...]
    user_tail: int  # tokens of ``after`` that still belong to the user turn
    add_special_tokens: bool  # how ``before`` was tokenized (``steerlab.model.prompts.encode``)
    answer_ids: tuple[int, ...] = ()  # A/B layout: the two answers' first differing tokens

    def user_text(self, suffix_text: str) -> str:
        """The user's message with the suffix: ``question + separator + suffix``."""
        return f"{self.question}{self.separator}{suffix_text}"

    def prompt_ids(self, suffix: Sequence[int]) -> list[int]:
        """``before + suffix + after``: the prompt up to the read position."""
        return [*self.before, *suffix, *self.after]

    def prompt_length(self, length: int) -> int:
        """Prompt tokens with a suffix of ``length`` (answer tokens come after these)."""
        return len(self.before) + length + len(self.after)

    def instruction_length(self, length: int) -> int:
        """Tokens up to the end of the user turn (``after_instruction`` starts here)."""
        return len(self.before) + length + self.user_tail

    def stable(self, tokenizer: Any, suffixes: Sequence[Sequence[int]],
               level: str = "prompt") -> list[bool]:
        """Which suffixes survive decode → encode.

        ``level="suffix"``: the suffix alone re-encodes to the same ids (nanoGCG's filter);
        ``"prompt"``: that, and the whole text (prompt with the suffix, then the tail) re-encodes
        to ``before + suffix + tail_ids`` (nothing merges across the boundaries); ``"off"``:
        all pass.

        Example:
            >>> from steerlab.testing.tiny import tiny_tokenizer
            >>> tok = tiny_tokenizer()
            >>> p = suffix_prompt(tok, "Hi?")
            >>> p.stable(tok, [tok.encode(" the", add_special_tokens=False)])
            [True]
        """
        if level not in RETOKENIZE:
            raise SteerlabError(f"retokenize must be one of {', '.join(RETOKENIZE)}, "
                                f"got {level!r}")
        rows = [list(s) for s in suffixes]
        if level == "off" or not rows:
            return [True] * len(rows)
        texts = decode_all(tokenizer, rows)
        again = tokenizer(texts, add_special_tokens=False)["input_ids"]
        ok = [list(a) == r for a, r in zip(again, rows, strict=True)]
        if level == "suffix":
            return ok
        full = [self.text_before + t + self.tail_text for t in texts]
        ids = tokenizer(full, add_special_tokens=self.add_special_tokens)["input_ids"]
        for i, (row, got) in enumerate(zip(rows, ids, strict=True)):
            if ok[i]:
                want = [*self.before, *row, *self.tail_ids]
                ok[i] = list(got[: len(want)]) == want
        return ok


RETOKENIZE = ("prompt", "suffix", "off")


def decode_all(tokenizer: Any, rows: Sequence[Sequence[int]]) -> list[str]:
    """Texts of token rows, exactly as written (special tokens kept, no space clean-up).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> decode_all(tok, [tok.encode(" Yes .", add_special_tokens=False)])
        [' Yes .']
    """
    return list(tokenizer.batch_decode([list(r) for r in rows], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False))


def _split(text: str, what: str) -> tuple[str, str]:
    parts = text.split(MARK)
    if len(parts) != 2:
        raise SteerlabError(f"the chat template does not keep the user's text as it is ({what}); "
                            "cannot place a suffix in it")
    return parts[0], parts[1]


def _plain(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def suffix_prompt(tokenizer: Any, question: str, *, assistant_prefix: str = "",
                  answers: Sequence[str] = (), target: str | None = None,
                  separator: str = "", system: str | None = None) -> SuffixPrompt:
    """The layout of ``question`` + suffix in this tokenizer's chat format.

    ``answers`` (A/B letters such as ``"(A)"``, ``"(B)"``): ``after`` then ends with the tokens
    the answers share (the CAA read position, as :func:`steerlab.data.sequences.ab_sequences`
    finds it). ``target``: an open answer scored after the prompt (``target`` ids).
    ``assistant_prefix`` is a plain prefill for neither case. ``separator`` goes between the
    question and the suffix (default none: suffix tokens carry their own leading spaces).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> p = suffix_prompt(tiny_tokenizer(), "Q?", target="Yes")
        >>> len(p.target) > 0
        True
    """
    if answers and (target is not None or assistant_prefix):
        raise SteerlabError("give A/B answers, an open target or an assistant prefix, not several")
    content = f"{question}{separator}{MARK}"
    text = chat_prompt(tokenizer, content, assistant_prefix, system=system)
    text_before, text_after = _split(text, "prompt")

    def after_text(answer: str) -> str:
        """What follows the suffix when the assistant's turn starts with ``answer``: the same
        rendering the core scorers use (``chat_prompt`` with the answer as prefill)."""
        return _split(chat_prompt(tokenizer, content, answer, system=system), "prompt")[1]
    add_special = not bool(getattr(tokenizer, "chat_template", None))
    before = encode(tokenizer, text_before)
    if list(tokenizer(text_before, add_special_tokens=add_special)["input_ids"]) != before:
        raise SteerlabError("cannot tell how this tokenizer adds special tokens")
    target_ids: list[int] = []
    answer_ids: tuple[int, ...] = ()
    if answers:
        if len(answers) != 2:
            raise SteerlabError("A/B layout needs exactly two answers")
        a, b = (_plain(tokenizer, after_text(x.strip())) for x in answers)
        common = common_prefix((a, b))
        if common >= min(len(a), len(b)):
            raise SteerlabError(f"answers {answers[0]!r} and {answers[1]!r} tokenize to "
                                "sequences that do not differ")
        after, tail_text, tail_ids = a[:common], after_text(answers[0].strip()), a[:common]
        answer_ids = (a[common], b[common])
    else:
        after = _plain(tokenizer, text_after)
        tail_text, tail_ids = text_after, list(after)
        if target is not None:
            full = _plain(tokenizer, after_text(target.strip()))
            if full[: len(after)] != after or len(full) == len(after):
                raise SteerlabError(f"answer {target[:30]!r} does not extend the prompt's tokens")
            target_ids = full[len(after):]
            tail_text, tail_ids = after_text(target.strip()), full
    if not after:
        raise SteerlabError("nothing follows the suffix: the prompt has no read position")
    return SuffixPrompt(question=question, separator=separator, before=tuple(before),
                        after=tuple(after), target=tuple(target_ids), text_before=text_before,
                        tail_text=tail_text, tail_ids=tuple(tail_ids),
                        user_tail=_user_tail(tokenizer, content, system, after),
                        add_special_tokens=add_special, answer_ids=answer_ids)


def _user_tail(tokenizer: Any, content: str, system: str | None, after: Sequence[int]) -> int:
    """How many of ``after``'s tokens close the user turn (without a template: the rest of the
    ``Question: … Answer:`` prompt, not the answer's prefill)."""
    if not getattr(tokenizer, "chat_template", None):
        closing = _plain(tokenizer, _split(chat_prompt(tokenizer, content, system=system),
                                           "instruction")[1])
        return min(common_prefix((closing, list(after))), len(after))
    head = tokenizer.apply_chat_template(chat_messages(content, system), tokenize=False,
                                         add_generation_prompt=False)
    closing = _plain(tokenizer, _split(str(head), "instruction")[1])
    return min(common_prefix((closing, list(after))), len(after))
