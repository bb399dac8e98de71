"""``steerlab serve``: an OpenAI-compatible server with per-request steering vectors.

Only typer and the standard library are imported here; the server (FastAPI, uvicorn, torch)
loads inside the command.

Example:
    $ steerlab serve --model smollm2-135m --vector optimism=opt.safetensors \\
          --vector syc=syc.safetensors --port 8000 --api-key KEY
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLE = ("steerlab serve --model smollm2-135m --vector optimism=opt.safetensors --port 8000 "
           "--default-steering '{\"vectors\": [{\"name\": \"optimism\", \"layers\": [10], "
           "\"strength\": 0.3}]}'")


def command(
    model: str = typer.Option("smollm2-135m", "--model",
                              help="Built-in alias (steerlab models list), Hugging Face id, "
                                   "local directory or .gguf file."),
    vector: list[str] = typer.Option([], "--vector",
                                     help="NAME=PATH of a steering vector (.safetensors) "
                                          "requests may name; repeat for more."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind (127.0.0.1: this machine only; 0.0.0.0 "
                                  "exposes it, use --api-key then)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="STEERLAB_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on /v1/* "
                                            "(or set STEERLAB_API_KEY)."),
    default_steering: str | None = typer.Option(
        None, "--default-steering",
        help="JSON steering applied to requests without a 'steering' field, e.g. "
             "'{\"vectors\": [{\"name\": \"refusal\", \"layers\": [12], \"strength\": 0.4}]}'; "
             "or @file.json."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most rows generating at once."),
    max_queue: int = typer.Option(64, "--max-queue",
                                  help="Most requests waiting for a row (429 past it)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens",
                                       help="Most new tokens one request may ask for as "
                                            "max_tokens (and the chat default)."),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens",
                                          help="Most prompt tokens one request may send."),
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", help="The model name clients use (default: --model)."),
    device_map: str | None = typer.Option(
        None, "--device-map",
        help="Where the weights go: cpu, cuda, cuda:1, auto (accelerate) or a JSON map of "
             "module → device."),
    max_cohorts: int = typer.Option(4, "--max-cohorts",
                                    help="Batches run interleaved, so new requests start "
                                         "between decode steps (1: batch after batch)."),
    batch_wait_ms: float = typer.Option(30.0, "--batch-wait-ms",
                                        help="An idle server starts a batch once no new "
                                             "request has come for this long (8x at most)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    engine: str = typer.Option("transformers", "--engine",
                               help="transformers (steerlab's own loop, in this process) or "
                                    "vllm (vLLM's OpenAI server with the steerlab plugin, run "
                                    "from the venv 'make vllm' builds)."),
    vllm_arg: list[str] = typer.Option([], "--vllm-arg",
                                       help="With --engine vllm: one more argument for vLLM's "
                                            "server, e.g. --vllm-arg=--tensor-parallel-size=2; "
                                            "repeat for more."),
) -> None:
    """Serve a model over an OpenAI-compatible API, steered per request by named vectors."""
    from steerlab.errors import SteerlabError
    from steerlab.serve.registry import parse_vector_option
    from steerlab.serve.steering import UNSTEERED, parse_steering_json

    # every option is checked before the (slow) model load
    pairs = [parse_vector_option(text) for text in vector]
    names = [name for name, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SteerlabError(f"--vector: name(s) {', '.join(twice)} given twice")
    for _, path in pairs:
        if not path.is_file():
            raise SteerlabError(f"--vector: {path}: file not found")
    steering = UNSTEERED
    if default_steering is not None:
        text = default_steering
        if text.startswith("@"):
            source = Path(text[1:]).expanduser()
            try:
                text = source.read_text()
            except OSError as exc:
                raise SteerlabError(f"--default-steering: {source}: "
                                    f"{exc.strerror or exc}") from None
        steering = parse_steering_json(text, "--default-steering")
        unknown = sorted({v.name for v in steering.vectors} - set(names))
        if unknown:
            raise SteerlabError(f"--default-steering names vector(s) {', '.join(unknown)} "
                                "not given with --vector NAME=PATH")
    if not 0 < port < 65536:
        raise SteerlabError(f"--port must be in 1..65535, got {port}")
    if batch_wait_ms < 0:
        raise SteerlabError(f"--batch-wait-ms must be >= 0, got {batch_wait_ms}")
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host} without --api-key: anyone who can reach it "
                   "can use it", err=True)
    if engine not in ("transformers", "vllm"):
        raise SteerlabError(f"--engine must be transformers or vllm, got {engine!r}")
    if engine == "vllm":
        _exec_vllm(model, pairs, steering, host=host, port=port, api_key=api_key,
                   served_name=served_model_name or model, extra=vllm_arg)
        return
    if vllm_arg:
        raise SteerlabError("--vllm-arg needs --engine vllm")

    from steerlab.model.load import load_model
    from steerlab.serve import run
    from steerlab.serve.app import ServerConfig, create_app
    from steerlab.serve.registry import VectorRegistry

    config = ServerConfig(model_name=served_model_name or model, api_key=api_key or None,
                          default_steering=steering, max_batch=max_batch, max_queue=max_queue,
                          max_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                          max_cohorts=max_cohorts, batch_wait_s=batch_wait_ms / 1000)
    lm = load_model(model, device_map=_device_map(device_map))
    registry = VectorRegistry.from_paths(pairs, model=lm)
    app = create_app(lm, registry, config)
    typer.echo(f"serving {config.model_name} with {len(registry)} vector(s) "
               f"({', '.join(registry.names) or 'none'}) on http://{host}:{port}/v1"
               f"{' (API key required)' if config.api_key else ''}", err=True)
    run(app, host=host, port=port, log_level=log_level)


def _exec_vllm(model: str, pairs: list[tuple[str, Path]], steering: object, *, host: str,
               port: int, api_key: str | None, served_name: str, extra: list[str]) -> None:
    """Replace this process with vLLM's OpenAI server (plugin, vectors, default steering)."""
    import json
    import os

    from steerlab.errors import SteerlabError
    from steerlab.model.aliases import ALIASES, alias_dir, is_pulled
    from steerlab.serve.steering import SteeringRequest
    from steerlab.serve.vllm.launch import server_command

    if model in ALIASES:
        if not is_pulled(model):
            raise SteerlabError(f"--engine vllm needs {model} on disk: run 'steerlab models "
                                f"pull {model}' first")
        model_dir: str = str(alias_dir(model))
    else:
        model_dir = model  # a directory or a hub id vLLM resolves itself
    if Path(model_dir).suffix == ".gguf":
        raise SteerlabError("--engine vllm takes a model directory or hub id, not a .gguf file")
    assert isinstance(steering, SteeringRequest)
    default = json.dumps(steering.public()) if steering.vectors else None
    argv, env = server_command(model_dir, served_name, dict(pairs), host=host, port=port,
                               api_key=api_key or None, default_steering=default, extra=extra)
    typer.echo(f"serving {served_name} on vLLM with {len(pairs)} vector(s) "
               f"({', '.join(n for n, _ in pairs) or 'none'}) on http://{host}:{port}/v1",
               err=True)
    os.execve(argv[0], argv, env)


def _device_map(text: str | None) -> str | dict[str, str | int] | None:
    """``--device-map``: a device name, ``auto``, or a JSON object of module → device."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.startswith("{"):
        return text
    import json

    from steerlab.errors import SteerlabError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SteerlabError(f"--device-map: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                              for k, v in value.items()):
        raise SteerlabError("--device-map: expected a JSON object of module name → device")
    return value


__all__ = ["EXAMPLE", "command"]

if __name__ == "__main__":  # python -m steerlab.cli.serve ... (the same options)
    typer.run(command)
