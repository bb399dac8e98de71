"""The server's settings: :class:`ServerConfig` and the fixed request limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlab.errors import SteerlabError
from steerlab.serve.steering import UNSTEERED, SteeringRequest

#: Largest request body accepted (bytes); longer prompts are refused by token count anyway.
MAX_BODY_BYTES = 8 * 2**20
#: Most stop strings per request (OpenAI allows 4).
MAX_STOPS = 4


@dataclass
class ServerConfig:
    """How the server runs: its model name, key, default steering and limits.

    ``max_tokens`` caps the new tokens one choice may ask for (and is the chat default),
    ``max_prompt_tokens`` the prompt, ``max_batch`` the rows generating at once, ``max_queue``
    the requests waiting (429 past it).

    Example:
        >>> ServerConfig(model_name="smollm2-135m", api_key="KEY").max_batch
        16
    """

    model_name: str
    api_key: str | None = None
    default_steering: SteeringRequest = field(default_factory=lambda: UNSTEERED)
    max_batch: int = 16
    max_queue: int = 64
    max_tokens: int = 512
    max_prompt_tokens: int = 4096
    max_cohorts: int = 4
    batch_wait_s: float = 0.03

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_tokens", "max_prompt_tokens", "max_cohorts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SteerlabError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) \
                or self.max_queue < 0:
            raise SteerlabError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise SteerlabError("the API key is empty")
