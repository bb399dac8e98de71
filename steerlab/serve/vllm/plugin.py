"""The vLLM general plugin: per-request steering inside vLLM's continuous batch, no fork.

vLLM calls :func:`register` in every process it starts (the entry point
``vllm.general_plugins: steerlab``). With ``STEERLAB_VECTORS=name=path,...`` set, it patches
three places of vLLM, each once per process:

* **front end** (``InputProcessor.process_inputs``): a request's
  ``SamplingParams.extra_args["steering"]`` (over HTTP: ``vllm_xargs.steering``, a JSON
  string) is checked with the same schema and rules as ``steerlab serve`` before the request
  is scheduled — a bad field is a ``VLLMValidationError`` (HTTP 400), never a silent no-op —
  normalised, given the prompt's instruction length (for ``after_instruction``) and, when the
  steering reaches prompt tokens, a prefix-cache salt from its fingerprint;
* **model runner** (``GPUModelRunner.load_model``, V1 runner, which the CPU runner extends):
  once the model is built and *before* vLLM compiles it, a forward hook is installed on every
  steered decoder layer this worker holds (all of them under tensor parallelism, its own stage's
  under pipeline parallelism), so the hooks are traced into the compiled graph;
* **model runner** (``_model_forward``): before each forward, outside the compiled region, the
  token → request map (``query_start_loc``, ``input_batch.req_ids``, ``positions``) fills the
  per-token coefficient buffers of :class:`~steerlab.serve.vllm.table.SteeringTable`.

The compile cache key gains a hash of the served vectors, so a graph traced without (or with
other) hooks is never reused. Without ``STEERLAB_VECTORS`` the plugin changes nothing.

Example:
    >>> import os                                                       # doctest: +SKIP
    >>> os.environ["STEERLAB_VECTORS"] = "optimism=opt.safetensors"     # doctest: +SKIP
    >>> from vllm import LLM, SamplingParams                            # doctest: +SKIP
    >>> llm = LLM("./model")  # the plugin registers itself             # doctest: +SKIP
    >>> sp = SamplingParams(max_tokens=32, extra_args={"steering": {"vectors": [
    ...     {"name": "optimism", "layers": [10], "strength": 0.3}]}})   # doctest: +SKIP
    >>> llm.generate(["I think that"], sp)                              # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.serve.registry import VectorRegistry, parse_vector_option
from steerlab.serve.vllm.table import (
    UNSTEERED_PLAN,
    RequestPlan,
    SteeringTable,
    TokenSpan,
    plan_request,
    steering_fingerprint,
)

log = logging.getLogger("vllm.steerlab")  # a child of vLLM's logger: printed with its own

#: The environment variable naming the served vectors: ``name=path,name=path``.
VECTORS_ENV = "STEERLAB_VECTORS"
#: Where the front end leaves the prompt's instruction length for the workers.
INSTRUCTION_KEY = "steerlab_instruction_length"

_patched = False


def vector_paths(text: str | None = None) -> list[tuple[str, Path]]:
    """The ``(name, path)`` pairs of ``STEERLAB_VECTORS`` (or ``text``).

    Example:
        >>> vector_paths("a=x.safetensors, b=y.safetensors")
        [('a', PosixPath('x.safetensors')), ('b', PosixPath('y.safetensors'))]
    """
    value = os.environ.get(VECTORS_ENV, "") if text is None else text
    return [parse_vector_option(item.strip()) for item in value.split(",") if item.strip()]


@functools.lru_cache(maxsize=1)
def served_registry() -> VectorRegistry:
    """The vectors of ``STEERLAB_VECTORS``, loaded once per process (safetensors only)."""
    try:
        return VectorRegistry.from_paths(vector_paths())
    except SteerlabError as exc:
        raise SteerlabError(f"{VECTORS_ENV}: {exc}") from None


def registry_hash() -> str:
    """A hash of the served vectors (names and file sha256), for vLLM's compile cache key."""
    registry = served_registry()
    text = ";".join(f"{d['name']}={d['sha256']}:{d['layers']}" for d in registry.describe())
    return hashlib.sha256(text.encode()).hexdigest()


def model_shape(model_config: Any) -> tuple[int, int]:
    """``(n_layers, hidden_size)`` of the served model, from vLLM's model config."""
    return int(model_config.get_total_num_hidden_layers()), int(model_config.get_hidden_size())


def check_registry(registry: VectorRegistry, n_layers: int, hidden_size: int) -> None:
    """Every served vector fits the model (width, layer range), else one line naming it."""
    for item in registry.describe():
        if item["hidden_size"] != hidden_size:
            raise SteerlabError(f"{VECTORS_ENV}: vector {item['name']!r} has hidden size "
                                f"{item['hidden_size']}, the model {hidden_size}")
        bad = [k for k in item["layers"] if not 0 <= k < n_layers]
        if bad:
            raise SteerlabError(f"{VECTORS_ENV}: vector {item['name']!r} has layer(s) {bad}; "
                                f"the model has {n_layers} layers")


def register() -> None:
    """The ``vllm.general_plugins`` entry point: patch vLLM when vectors are served."""
    global _patched
    if _patched or not vector_paths():
        return
    served_registry()  # a missing or bad vector file fails the engine start, in one line
    _patch_front_end()
    _patch_model_runner()
    _patch_compile_hash()
    _patched = True


# ---- front end: validate, normalise, salt --------------------------------------------------
def generation_suffix(tokenizer: Any) -> list[int]:
    """The tokens a chat template appends to open the assistant's turn (``[]`` without one).

    A prompt ending with them is a chat prompt whose instruction ends right before them: the
    same ``after_instruction`` start as ``steerlab serve``'s chat prompts.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "x"}]
    try:
        with_prompt = tokenizer.apply_chat_template(messages, tokenize=False,
                                                    add_generation_prompt=True)
        without = tokenizer.apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=False)
    except Exception:  # a template that needs more than one user turn
        return []
    if not str(with_prompt).startswith(str(without)):
        return []
    tail = str(with_prompt)[len(str(without)):]
    return list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []


def instruction_length(prompt_ids: list[int], suffix: list[int]) -> int:
    """Where ``after_instruction`` starts in ``prompt_ids``.

    Example:
        >>> instruction_length([1, 2, 3, 7, 8], [7, 8]), instruction_length([1, 2], [7, 8])
        (3, 2)
    """
    n = len(prompt_ids)
    if suffix and n >= len(suffix) and list(prompt_ids[n - len(suffix):]) == suffix:
        return n - len(suffix)
    return n


def _patch_front_end() -> None:
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.input_processor import InputProcessor

    original = InputProcessor.process_inputs

    @functools.wraps(original)
    def process_inputs(self: Any, request_id: str, prompt: Any, params: Any, *args: Any,
                       **kwargs: Any) -> Any:
        extra = getattr(params, "extra_args", None) if isinstance(params, SamplingParams) \
            else None
        if not extra or extra.get("steering") is None:
            return original(self, request_id, prompt, params, *args, **kwargs)
        registry = served_registry()
        n_layers, hidden_size = model_shape(self.model_config)
        try:
            if self.vllm_config.use_v2_model_runner:
                raise SteerlabError("steering needs vLLM's V1 model runner; start vLLM with "
                                    "VLLM_USE_V2_MODEL_RUNNER=0")
            plan = plan_request(extra["steering"], registry, n_layers, hidden_size)
        except SteerlabError as exc:
            raise VLLMValidationError(str(exc)) from None
        request = original(self, request_id, prompt, params, *args, **kwargs)
        args_out = request.sampling_params.extra_args
        args_out["steering"] = plan.request.public() if plan.entries else None
        if plan.entries:
            suffix = getattr(self, "_steerlab_suffix", None)
            if suffix is None:
                suffix = generation_suffix(self.tokenizer)
                self._steerlab_suffix = suffix
            args_out[INSTRUCTION_KEY] = instruction_length(list(request.prompt_token_ids or []),
                                                           suffix)
            salt = steering_fingerprint(plan, registry)
            if salt is not None:
                request.cache_salt = f"{request.cache_salt or ''}|{salt}"
        return request

    InputProcessor.process_inputs = process_inputs


# ---- model runner: hooks at load, buffers per step ------------------------------------------
def decoder_layers(model: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the ``ModuleList`` with one entry per layer."""
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise SteerlabError(f"the vLLM model {type(model).__name__} has no ModuleList of "
                        f"{n_layers} decoder layers; steering it is not supported")


def _hook(table: SteeringTable, li: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple) and len(output) == 2:
            return table.apply(li, output[0], output[1])
        if isinstance(output, torch.Tensor):
            return table.apply(li, output, None)[0]
        raise SteerlabError(f"decoder layer {type(module).__name__} returned "
                            f"{type(output).__name__}; steering expects hidden states or "
                            "(hidden, residual)")
    return hook


def install(runner: Any) -> SteeringTable:
    """Install the steering hooks on the layers this runner holds; returns their table."""
    registry = served_registry()
    n_layers, hidden_size = model_shape(runner.model_config)
    check_registry(registry, n_layers, hidden_size)
    stack = decoder_layers(runner.model, n_layers)
    wanted = sorted({k for item in registry.describe() for k in item["layers"]})
    held = [k for k in wanted if type(stack[k]).__name__ != "PPMissingLayer"]
    scheduler = runner.vllm_config.scheduler_config
    compilation = runner.vllm_config.compilation_config
    capture = max(getattr(compilation, "cudagraph_capture_sizes", None) or [0])
    max_tokens = max(int(scheduler.max_num_batched_tokens), int(capture))
    dtype = runner.model_config.dtype
    table = SteeringTable(registry, held, max_tokens, device=runner.device, dtype=dtype)
    for li, layer in enumerate(held):
        stack[layer].register_forward_hook(_hook(table, li))
    runner._steerlab_table = table
    runner._steerlab_plans = {}
    log.info("steerlab: steering hooks on layers %s (%d vectors, %d token rows)", held,
             len(registry), max_tokens)
    return table


def _plan_of(runner: Any, req_id: str) -> RequestPlan:
    plans: dict[str, RequestPlan] = runner._steerlab_plans
    plan = plans.get(req_id)
    if plan is None:
        state = runner.requests[req_id]
        params = state.sampling_params
        extra = getattr(params, "extra_args", None) or {}
        steering = extra.get("steering")
        if steering is None:
            plan = UNSTEERED_PLAN
        else:
            n_layers, hidden_size = model_shape(runner.model_config)
            plan = plan_request(steering, served_registry(), n_layers, hidden_size)
        plans[req_id] = plan
    return plan


def spans(runner: Any) -> list[TokenSpan]:
    """This step's requests in flat-batch order, each with its tokens and its plan."""
    batch = runner.input_batch
    num_reqs = int(batch.num_reqs)
    starts = runner.query_start_loc.np[: num_reqs + 1]
    plans: dict[str, RequestPlan] = runner._steerlab_plans
    if len(plans) > 4 * max(num_reqs, 64):  # forget requests that have left
        live = set(batch.req_ids[:num_reqs])
        for rid in [r for r in plans if r not in live]:
            del plans[rid]
    out = []
    for i, rid in enumerate(batch.req_ids[:num_reqs]):
        plan = _plan_of(runner, rid)
        state = runner.requests[rid]
        prompt = len(state.prompt_token_ids or [])
        extra = getattr(state.sampling_params, "extra_args", None) or {}
        out.append(TokenSpan(plan, int(starts[i]), int(starts[i + 1]), prompt,
                             extra.get(INSTRUCTION_KEY)))
    return out


def _patch_model_runner() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    for cls in {GPUModelRunner, *_runner_subclasses(GPUModelRunner)}:
        if "load_model" in vars(cls):
            cls.load_model = _wrap_load(vars(cls)["load_model"])
    forward = GPUModelRunner._model_forward

    @functools.wraps(forward)
    def _model_forward(self: Any, input_ids: Any = None, positions: Any = None,
                       *args: Any, **kwargs: Any) -> Any:
        table: SteeringTable | None = getattr(self, "_steerlab_table", None)
        if table is not None and positions is not None:
            flat = positions if positions.ndim == 1 else positions[0]
            table.fill(spans(self), flat.detach().cpu().numpy())
        return forward(self, input_ids, positions, *args, **kwargs)

    GPUModelRunner._model_forward = _model_forward


def _runner_subclasses(cls: type) -> list[type]:
    import importlib

    for name in ("vllm.v1.worker.cpu_model_runner", "vllm.v1.worker.xpu_model_runner"):
        try:
            importlib.import_module(name)
        except Exception:  # a platform's runner that cannot import here
            continue
    out: list[type] = []
    todo: list[type] = list(cls.__subclasses__())
    while todo:
        sub = todo.pop()
        out.append(sub)
        todo += sub.__subclasses__()
    return out


def _wrap_load(load: Any) -> Any:
    @functools.wraps(load)
    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = load(self, *args, **kwargs)
        if getattr(self, "_steerlab_table", None) is None:
            install(self)
        return result
    return load_model


def _patch_compile_hash() -> None:
    from vllm.config import VllmConfig

    original = VllmConfig.compute_hash

    @functools.wraps(original)
    def compute_hash(self: Any, *args: Any, **kwargs: Any) -> str:
        base = original(self, *args, **kwargs)
        return hashlib.sha256(f"{base}|steerlab:{registry_hash()}".encode()).hexdigest()[
            : len(base) or 10]

    VllmConfig.compute_hash = compute_hash
