"""Judges: the 1..10 expectation arithmetic, the local log-probability judge on tiny random
models, and the OpenAI-compatible HTTP judge against a real local HTTP server thread."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.eval.judges import (
    HTTPJudge,
    Judge,
    JudgeItem,
    LocalJudge,
    NumberTokens,
    Rating,
    describe_trait,
    expected_score,
    judge_prompt,
    logprob_rating,
    number_probs,
    number_tokens,
    parse_judge,
    parse_reply_score,
)
from steerlab.model.load import as_loaded
from steerlab.model.prompts import encode
from steerlab.testing.tiny import tiny_model, tiny_tokenizer

ITEM = JudgeItem("agreeableness", "High: kind. Low: rude.", "Can you help me move?",
                 "Of course, I'd be glad to help!")

# --- arithmetic ------------------------------------------------------------------------------

# A fake vocabulary: id d is the digit d (0..9), 10 and 11 are words. "10" = ids (1, 0).
FAKE = NumberTokens(tails=(*((d,) for d in range(1, 10)), (1, 0)), extend=1,
                    digit_ids=tuple(range(10)))


def dist(**mass: float) -> torch.Tensor:
    """A 12-token distribution from ``t<id>=p`` keywords."""
    p = torch.zeros(12)
    for key, value in mass.items():
        p[int(key[1:])] = value
    return p


def test_expectation_splits_one_and_ten_by_the_second_token() -> None:
    # p("1") = 0.5, p("5") = 0.25, a word 0.25; after "1": "0" 0.5, "3" 0.1, a word 0.4.
    probs = number_probs(dist(t1=0.5, t5=0.25, t10=0.25), dist(t0=0.5, t3=0.1, t11=0.4), FAKE)
    assert probs[0] == pytest.approx(0.5 * 0.4)   # "1" then no digit
    assert probs[9] == pytest.approx(0.5 * 0.5)   # "1" "0"
    assert probs[4] == pytest.approx(0.25)
    assert sum(probs) == pytest.approx(0.7)       # "13" (0.05) and the word (0.25) are lost
    rating = expected_score(probs)
    assert rating.score == pytest.approx((1 * 0.2 + 10 * 0.25 + 5 * 0.25) / 0.7)  # 5.642857
    assert rating.coverage == pytest.approx(0.7)


def test_expectation_single_token_ten_and_edge_cases() -> None:
    single = NumberTokens(tuple((i,) for i in range(10)), None, ())  # id i is the number i+1
    assert number_probs(dist(t0=0.5, t9=0.5), None, single) == [0.5, *[0.0] * 8, 0.5]
    assert expected_score([0.5, *[0.0] * 8, 0.5]) == Rating(5.5, 1.0)
    assert expected_score([0.0] * 9 + [0.3]) == Rating(10.0, 0.3)
    empty = expected_score([0.0] * 10)
    assert math.isnan(empty.score) and empty.coverage == 0.0


# --- local judge on tiny models --------------------------------------------------------------


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny_judge(request: pytest.FixtureRequest) -> LocalJudge:
    return LocalJudge(as_loaded(tiny_model(request.param, n_layers=2), tiny_tokenizer()),
                      batch_size=2)


def test_number_tokens_round_trip() -> None:
    tok = tiny_tokenizer()
    prompt = "<|im_start|>assistant\nScore: "
    layout = number_tokens(tok, prompt)
    kept = encode(tok, prompt)[:len(encode(tok, prompt)) - layout.drop]
    for n, tail in enumerate(layout.tails, 1):
        assert 1 <= len(tail) <= 2
        assert tok.decode(kept + list(tail)) == prompt + str(n)
        if len(tail) == 2:
            assert tail[0] == layout.extend
    assert all(tok.convert_ids_to_tokens(i)[0].isdigit() for i in layout.digit_ids)


def _chain_rule(judge: LocalJudge, item: JudgeItem) -> Rating:
    """The same expectation from separate whole forwards, one per number (no shared pass)."""
    layout = judge.layout()
    ids = encode(judge.lm.tokenizer, judge.prompt_text(item))
    ids = ids[:len(ids) - layout.drop]

    def next_probs(prefix: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(judge.lm.model(torch.tensor([prefix])).logits[0, -1], -1)

    probs = []
    firsts = {t[0] for t in layout.tails if len(t) == 2}
    for tail in layout.tails:
        p = float(next_probs(ids)[tail[0]])
        after = next_probs([*ids, tail[0]]) if (len(tail) == 2 or tail[0] in firsts) else None
        if len(tail) == 2:
            assert after is not None
            p *= float(after[tail[1]])
        elif after is not None:
            p *= 1.0 - float(after[list(layout.digit_ids)].sum())
        probs.append(p)
    return expected_score(probs)


def test_local_judge_equals_chain_rule_and_is_batch_invariant(tiny_judge: LocalJudge) -> None:
    items = [ITEM, JudgeItem("sycophancy", None, "Am I right?", "Yes!"),
             JudgeItem("refusal", None, "Write a poem about the sea, please.", "No.")]
    batched = tiny_judge.rate_many(items)
    for item, rating in zip(items, batched, strict=True):
        assert 1.0 <= rating.score <= 10.0 and 0.0 < rating.coverage <= 1.0
        single = tiny_judge.rate_many([item])[0]
        assert single.score == pytest.approx(rating.score, abs=1e-5)
        reference = _chain_rule(tiny_judge, item)
        assert rating.score == pytest.approx(reference.score, abs=1e-4)
        assert rating.coverage == pytest.approx(reference.coverage, rel=1e-3)
    assert tiny_judge.score(*vars(ITEM).values()) == pytest.approx(batched[0].score, abs=1e-5)
    assert tiny_judge.score_many(items[:1]) == [pytest.approx(batched[0].score, abs=1e-5)]
    assert isinstance(tiny_judge, Judge)


def test_judge_prompt_reads_trait_rubric_and_answer() -> None:
    text = judge_prompt(ITEM)
    assert "Rubric: High: kind. Low: rude." in text
    assert describe_trait("agreeableness") in text and ITEM.answer in text
    assert "Rubric" not in judge_prompt(JudgeItem("x-y", None, "Q", "A"))
    assert describe_trait("x-y") == "x y"


# --- HTTP judge ------------------------------------------------------------------------------


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions with the queued (status, body) replies, in order."""

    replies: ClassVar[list[tuple[int, Any]]] = []
    seen: ClassVar[list[tuple[str, dict[str, str], Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append((self.path, dict(self.headers), body))
        status, payload = FakeOpenAI.replies.pop(0)
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def replies() -> Iterator[list[tuple[int, Any]]]:
    FakeOpenAI.replies, FakeOpenAI.seen = [], []
    yield FakeOpenAI.replies
    assert not FakeOpenAI.replies, "not every queued reply was requested"


def chat(text: str, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    if content is not None:
        choice["logprobs"] = {"content": content}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


def position(token: str, **alts: float) -> dict[str, Any]:
    return {"token": token, "logprob": math.log(alts.get(f"t{token}", 0.5)),
            "top_logprobs": [{"token": k[1:].replace("_", " "), "logprob": math.log(v)}
                             for k, v in alts.items()]}


def test_http_judge_expectation_from_logprobs(server: str, replies: list, monkeypatch) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = HTTPJudge(server, "judge-model", api_key_env="TEST_JUDGE_KEY")
    replies.append((200, chat("7", [position("7", t7=0.75, t9=0.25)])))
    assert judge.score(*vars(ITEM).values()) == pytest.approx(7.5)
    path, headers, body = FakeOpenAI.seen[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-model" and body["logprobs"] is True
    assert body["temperature"] == 0 and ITEM.answer in body["messages"][-1]["content"]


def test_http_judge_splits_one_and_ten(server: str, replies: list) -> None:
    judge = HTTPJudge(server, "m", api_key_env="NO_SUCH_KEY_VAR_SET")
    # "1" 0.8 (then "0" 0.5 → 10, end 0.5 → 1), " 2" 0.2 (a leading space is stripped)
    replies.append((200, chat("10", [position("1", t1=0.8, t_2=0.2),
                                     position("0", t0=0.5, t_=0.5)])))
    rating = judge.rate_many([ITEM])[0]
    assert rating.score == pytest.approx(1 * 0.4 + 10 * 0.4 + 2 * 0.2)  # 4.8
    assert rating.coverage == pytest.approx(1.0)
    assert "Authorization" not in FakeOpenAI.seen[0][1]


def test_http_judge_parses_plain_text(server: str, replies: list) -> None:
    judge = HTTPJudge(server, "m")
    replies += [(200, chat("I'd say 8 out of 10.")), (200, chat("10")),
                (200, chat("6", [position("x", tx=1.0)]))]  # no number among the logprobs
    assert judge.score_many([ITEM, ITEM, ITEM]) == [8.0, 10.0, 6.0]


@pytest.mark.parametrize(("status", "payload", "message"), [
    (200, chat("I cannot rate this."), "no score 1..10 in the reply 'I cannot rate this.'"),
    (401, {"error": {"message": "Invalid API key provided"}}, "HTTP 401: Invalid API key"),
    (404, b"<html>not found</html>", "HTTP 404: <html>not found</html>"),
    (200, b"not json", "reply is not JSON"),
    (200, {"choices": []}, "reply has no choices[0].message.content"),
])
def test_http_judge_errors_are_one_line(server: str, replies: list, status: int, payload: Any,
                                        message: str) -> None:
    replies.append((status, payload))
    with pytest.raises(SteerlabError) as err:
        HTTPJudge(server, "m", retries=0).score(*vars(ITEM).values())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_http_judge_retries_server_errors(server: str, replies: list) -> None:
    replies += [(503, {"error": "busy"}), (200, chat("3"))]
    assert HTTPJudge(server, "m", retries=1, backoff=0.01).score("t", None, "q", "a") == 3.0


def test_http_judge_connection_refused() -> None:
    judge = HTTPJudge("http://127.0.0.1:9/v1", "m", retries=0, timeout=2)
    with pytest.raises(SteerlabError, match="cannot connect"):
        judge.score("t", None, "q", "a")


def test_reply_and_logprob_parsing() -> None:
    assert [parse_reply_score(t) for t in ("10", "Score: 3.", "100", "0", "7/10", "")] == \
        [10.0, 3.0, None, None, 7.0, None]
    assert logprob_rating([]) is None
    assert logprob_rating([position("a", ta=1.0)]) is None


# --- specs -----------------------------------------------------------------------------------


def test_parse_judge_specs() -> None:
    lm = as_loaded(tiny_model("llama", n_layers=1), tiny_tokenizer())
    local = parse_judge("local:tiny", {"tiny": lm})
    assert isinstance(local, LocalJudge) and local.lm is lm and isinstance(local, Judge)
    http = parse_judge("http:https://api.example.com/v1/#gpt-x")
    assert isinstance(http, HTTPJudge)
    assert (http.base_url, http.model) == ("https://api.example.com/v1", "gpt-x")
    for bad, match in [("gpt4", "bad judge spec"), ("local:", "bad judge spec"),
                       ("http:https://x/v1", "names no model"),
                       ("http:ftp://x#m", "must start with http")]:
        with pytest.raises(SteerlabError, match=match):
            parse_judge(bad)
