"""Tokens to text as they stream: incremental detokenization and OpenAI ``stop`` strings.

:class:`TextStream` turns one row's tokens into text deltas whose concatenation is the text
of all its tokens (a token that ends inside a multi-byte character waits for the next one),
and holds back text that could be the start of a stop string, so a streamed reply never shows
part of a stop string that a non-streamed reply would have cut.

Example:
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> tok = tiny_tokenizer()
    >>> ids = tok("Hello there. Bye now.")["input_ids"]
    >>> stream = TextStream(tok, stop=[" Bye"])
    >>> "".join(stream.push(t) for t in ids) + stream.flush()
    'Hello there.'
    >>> stream.stopped
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextStream:
    """Text deltas of one row's tokens, cut at the first ``stop`` string (not included)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.tokens: list[int] = []
        self.text = ""  # what has been released so far
        self.stopped = False
        self._pending = ""  # decoded but held back (could start a stop string)
        self._prefix = 0  # tokens[_prefix:_read] decode to the context of the next token
        self._read = 0

    def _decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    def push(self, token: int) -> str:
        """Add one token; the text it releases (maybe ``""``)."""
        if self.stopped:
            return ""
        self.tokens.append(int(token))
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(self.tokens[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self._prefix, self._read = self._read, len(self.tokens)
        return self._release(after[len(before):], final=False)

    def flush(self) -> str:
        """The row ended: release whatever is left (an incomplete last character included)."""
        if self.stopped:
            return ""
        tail = ""
        if self._read < len(self.tokens):
            before = self._decode(self.tokens[self._prefix:self._read])
            after = self._decode(self.tokens[self._prefix:])
            tail = after[len(before):]
            self._prefix = self._read = len(self.tokens)
        return self._release(tail, final=True)

    def _release(self, delta: str, final: bool) -> str:
        if not self.stop:
            self.text += delta
            return delta
        candidate = self._pending + delta
        # released text never ends inside a possible stop string (that part is held back in
        # _pending), so a stop string lies wholly inside the candidate
        cut = min((i for i in (candidate.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out = candidate[:cut]
            self.text += out
            self._pending = ""
            self.stopped = True
            return out
        hold = 0 if final else _partial_stop(candidate, self.stop)
        out, self._pending = candidate[:len(candidate) - hold], candidate[len(candidate) - hold:]
        self.text += out
        return out


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string.

    Example:
        >>> _partial_stop("hello wor", ["world"]), _partial_stop("hello", ["xyz"])
        (3, 0)
    """
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
