"""The request bodies of the completion routes (pydantic models of OpenAI's schema).

Unknown fields are accepted and ignored; ``unsupported()`` lists the options this server
would otherwise silently ignore, so the routes can refuse them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Open(BaseModel):
    """OpenAI request objects: unknown fields are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool = False


class ContentPart(_Open):
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(_Open):
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None


class GenerationRequest(_Open):
    """What both completion routes accept: model, sampling, limits, stream and steering."""

    model: StrictStr | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, description="0 or -1: off (extension)")
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = Field(default=False, description="keep generating past the model's "
                             "end-of-sequence token (vLLM's extension; for benchmarks)")
    steering: Any = Field(default=None, description="{'vectors': [...]}; null: unsteered; "
                          "absent: the server default")
    vllm_xargs: dict[str, Any] | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        """(param, why) for options this server would otherwise silently ignore."""
        out = []
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                out.append((name, f"{name} is not supported"))
        if self.logit_bias:
            out.append(("logit_bias", "logit_bias is not supported"))
        return out


class ChatCompletionRequest(GenerationRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.logprobs or self.top_logprobs:
            out.append(("logprobs", "logprobs are not supported"))
        if self.tools:
            out.append(("tools", "tools are not supported"))
        if self.tool_choice not in (None, "none", "auto"):
            out.append(("tool_choice", "tool_choice is not supported"))
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            out.append(("response_format", "only response_format type 'text' is supported"))
        return out


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions``."""

    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: StrictStr | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.echo:
            out.append(("echo", "echo is not supported"))
        if self.logprobs is not None:
            out.append(("logprobs", "logprobs are not supported"))
        if self.best_of not in (None, 1):
            out.append(("best_of", "best_of is not supported"))
        if self.suffix:
            out.append(("suffix", "suffix is not supported"))
        return out
