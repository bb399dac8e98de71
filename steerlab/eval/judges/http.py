"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (stdlib urllib).

With ``top_logprobs`` in the reply the expected score is computed from the first token's top
alternatives (``"1"`` is split into 1 vs 10 by the second token's alternatives when the reply
starts with ``"1"``); without them, the first integer 1..10 in the reply is the score.

Example:
    >>> parse_reply_score("Score: 7/10")
    7.0
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval.judges.base import (
    SCALE,
    SYSTEM,
    JudgeBase,
    JudgeItem,
    Rating,
    expected_score,
    judge_prompt,
)
from steerlab.util.progress import bar

_INTEGER = re.compile(r"(?<!\d)(0|[1-9]\d*)(?!\d)")


def parse_reply_score(text: str, numbers: Sequence[int] = SCALE) -> float | None:
    """The first integer of ``numbers`` (1..10) standing alone in a judge's reply, or ``None``.

    Example:
        >>> parse_reply_score("Score: 7/10"), parse_reply_score("ten"), parse_reply_score("42")
        (7.0, None, None)
        >>> parse_reply_score("Rating: [[2]]", numbers=(0, 1, 2))
        2.0
    """
    for match in _INTEGER.finditer(text):
        if int(match.group(1)) in numbers:
            return float(match.group(1))
    return None


def _alternatives(position: Any) -> dict[str, float]:
    """token text (stripped) → summed probability over a position's ``top_logprobs``."""
    out: dict[str, float] = {}
    if not isinstance(position, Mapping):
        return out
    for alt in position.get("top_logprobs") or []:
        if isinstance(alt, Mapping) and isinstance(alt.get("token"), str) \
                and isinstance(alt.get("logprob"), int | float):
            key = alt["token"].strip()
            out[key] = out.get(key, 0.0) + math.exp(float(alt["logprob"]))
    return out


def logprob_rating(content: Sequence[Any], numbers: Sequence[int] = SCALE) -> Rating | None:
    """The expected score on ``numbers`` (1..10) from an OpenAI ``choices[0].logprobs.content``
    list, if it has any of them among the first token's alternatives (a "1" that may go on to
    "10" is split by the second token's alternatives when 10 is on the scale).

    Example:
        >>> pos = {"token": "7", "top_logprobs": [{"token": "7", "logprob": math.log(0.75)},
        ...                                       {"token": "9", "logprob": math.log(0.25)}]}
        >>> logprob_rating([pos])
        Rating(score=7.5, coverage=1.0)
    """
    if not content:
        return None
    first = _alternatives(content[0])
    numbers = tuple(numbers)
    probs = [first.get(str(n), 0.0) for n in numbers]
    chosen = content[0].get("token", "").strip() if isinstance(content[0], Mapping) else ""
    if 1 in numbers and 10 in numbers:
        one, ten = numbers.index(1), numbers.index(10)
        if chosen == "1" and len(content) > 1 and probs[one] > 0:
            after = _alternatives(content[1])
            p_zero = after.get("0", 0.0)
            p_digit = sum(p for tok, p in after.items() if tok[:1].isdigit() and tok != "0")
            p_one = probs[one]
            probs[one] = p_one * max(0.0, 1.0 - p_zero - p_digit)
            probs[ten] += p_one * p_zero
    if sum(probs) <= 0.0:
        return None
    return expected_score(probs, numbers)


class HTTPJudge(JudgeBase):
    """A judge behind an OpenAI-compatible ``POST {base_url}/chat/completions``.

    The API key is read from ``$api_key_env`` when set (sent as a Bearer token); local servers
    that need none work without it. HTTP 429/5xx are retried ``retries`` times (waiting
    ``backoff``·2^k s); every other failure is a one-line :class:`SteerlabError`.

    Example:
        >>> judge = HTTPJudge("https://api.openai.com/v1", "gpt-4o-mini")    # doctest: +SKIP
        >>> judge.score("sycophancy", None, "I'm right?", "So right!")  # doctest: +SKIP
        9.1
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", *,
                 timeout: float = 60.0, retries: int = 2, backoff: float = 1.0,
                 logprobs: bool = True, progress: bool = False):
        if not base_url.startswith(("http://", "https://")):
            raise SteerlabError(f"judge URL {base_url!r} must start with http:// or https://")
        if not model:
            raise SteerlabError("HTTP judge needs a model name")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.logprobs = logprobs
        self.progress = progress
        self.name = f"http:{self.base_url}#{model}"

    def _request(self, body: dict[str, Any]) -> Any:
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(self.backoff * 2.0 ** attempt)
                    continue
                detail = _error_detail(exc.read())
                raise SteerlabError(f"judge {url}: HTTP {exc.code}{detail}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise SteerlabError(f"judge {url}: cannot connect ({reason})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise SteerlabError(f"judge {url}: reply is not JSON: {raw[:80]!r}") from None

    def rate(self, item: JudgeItem) -> Rating:
        """One request → one rating on 1..10."""
        return self.rate_prompt(judge_prompt(item))

    def rate_prompts(self, prompts: Sequence[str], numbers: Sequence[int] = SCALE,
                     system: str = SYSTEM) -> list[Rating]:
        """The rating on ``numbers`` of each judge question (a user turn), one request each."""
        out = []
        with bar(len(prompts), "judge", unit="answer", enabled=self.progress) as progress:
            for prompt in prompts:
                out.append(self.rate_prompt(prompt, numbers, system))
                progress.update(1)
        return out

    def rate_prompt(self, prompt: str, numbers: Sequence[int] = SCALE,
                    system: str = SYSTEM) -> Rating:
        """One request → one rating on ``numbers``: the log-probability expectation when the
        endpoint returns ``top_logprobs``, else the first number of the scale in the reply."""
        numbers = tuple(numbers)
        body: dict[str, Any] = {
            "model": self.model, "temperature": 0, "max_tokens": 4,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": prompt}]}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=20)
        reply = self._request(body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise SteerlabError(f"judge {self.name}: reply has no choices[0].message.content: "
                                f"{json.dumps(reply)[:80]}") from None
        content = ((choice.get("logprobs") or {}).get("content") or []) \
            if isinstance(choice, Mapping) else []
        rating = logprob_rating(content, numbers) if self.logprobs else None
        if rating is not None:
            return rating
        value = parse_reply_score(str(text), numbers)
        if value is None:
            raise SteerlabError(f"judge {self.name}: no score {numbers[0]}..{numbers[-1]} in the "
                                f"reply {text[:60]!r}")
        return Rating(value, 1.0)

    def rate_many(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """One request per item, in order (ratings on 1..10)."""
        return self.rate_prompts([judge_prompt(item) for item in items])


def _error_detail(raw: bytes) -> str:
    """``": <message>"`` from an error body (OpenAI's ``{"error": {"message": ...}}``)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
        err = payload.get("error") if isinstance(payload, dict) else None
        text = str(err.get("message") if isinstance(err, dict) else err or text)
    except ValueError:
        pass
    text = " ".join(text.split())
    return f": {text[:120]}" if text else ""


