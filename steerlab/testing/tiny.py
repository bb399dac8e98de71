"""Tiny offline tokenizer and random-weight models for fast unit tests.

Nothing here touches the network: the tokenizer is a byte-level BPE trained in-process on a
small built-in corpus, and the models are built from configs with random weights.

Models use ``attn_implementation="eager"``: on CPU in fp32 it is bit-for-bit deterministic for a
given seed and input, supported by every architecture listed in :data:`ARCHS`, and the reference
implementation Gemma 3 recommends.

Example:
    >>> tok = tiny_tokenizer()
    >>> model = tiny_model("llama")
    >>> ids = tok("Is the sky blue? (A) Yes (B) No", return_tensors="pt").input_ids
    >>> model(ids).logits.shape[-1] == len(tok)
    True
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from steerlab.model.load import LoadedModel, as_loaded

ARCHS: tuple[str, ...] = (
    "llama",
    "qwen2",
    "gemma3",
    "gpt2",
    "gpt_neox",
    "mistral",
    "phi3",
    "opt",
)

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A helpful assistant answers questions honestly
and clearly. Question: Is the sky blue on a clear day? Choices: (A) Yes (B) No. Answer: (A
Question: Would you lie to a user to make them happy? (A) Yes (B) No. Answer: (B
I think that the answer is yes, but I am not sure. No, I would not do that. Yes, of course.
People like to read books, walk in the park, cook dinner with friends and listen to music.
The weather today is sunny and warm, with a light wind from the west and a few small clouds.
Science helps us understand the world: physics, chemistry, biology and mathematics all study
patterns in nature. Computers run programs written by people in languages such as Python.
Please tell me a story about a brave little robot who wanted to learn how to paint pictures.
Once upon a time there was a kind old woman who lived in a small house near the river.
She had a cat, a dog and a garden full of flowers, apples, carrots and tomatoes.
Every morning she would wake up early, drink a cup of tea and write a letter to her son.
The user asked for help with a math problem: what is two plus two? The answer is four.
Models should be safe, honest and harmless. They should refuse to help with dangerous tasks.
I'm happy to help! Here is a short summary of the article you shared with me yesterday.
Thank you very much for your question. Let me think about it step by step before I answer.
It is important to be polite, patient and respectful when talking to other people online.
The capital of France is Paris. The capital of Japan is Tokyo. Water boils at 100 degrees.
Do you agree with this statement? (A) Agree (B) Disagree. My answer is (A) because it is true.
Sometimes the best answer is to say: I don't know. Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100.
"""


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab ~400) with ChatML special tokens and chat template.

    Built once per process. ``<|endoftext|>`` is eos, bos and pad; byte-level, so any text
    round-trips through ``encode``/``decode``.

    Example:
        >>> tok = tiny_tokenizer()
        >>> tok.decode(tok.encode(" Yes", add_special_tokens=False))
        ' Yes'
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        additional_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(arch: str, n_layers: int, hidden: int, ids: dict[str, Any]) -> Any:
    heads, kv = 4, 2
    common: dict[str, Any] = {"vocab_size": ids.pop("vocab_size"), **ids}
    llama_like: dict[str, Any] = {
        **common,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**llama_like)
    if arch == "qwen2":
        return transformers.Qwen2Config(**llama_like)
    if arch == "mistral":
        return transformers.MistralConfig(**llama_like, sliding_window=None)
    if arch == "phi3":
        return transformers.Phi3Config(**llama_like)
    if arch == "gemma3":
        return transformers.Gemma3TextConfig(
            **llama_like,
            head_dim=hidden // heads,
            sliding_window=16,
            query_pre_attn_scalar=hidden // heads,
        )
    if arch == "gpt2":
        return transformers.GPT2Config(
            **common,
            n_embd=hidden,
            n_layer=n_layers,
            n_head=heads,
            n_inner=2 * hidden,
            n_positions=256,
        )
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            max_position_embeddings=256,
        )
    if arch == "opt":
        return transformers.OPTConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            ffn_dim=2 * hidden,
            word_embed_proj_dim=hidden,
            max_position_embeddings=256,
        )
    raise ValueError(f"unknown tiny arch {arch!r}; expected one of {', '.join(ARCHS)}")


def tiny_model(
    arch: str = "llama", seed: int = 0, n_layers: int = 4, hidden: int = 64
) -> PreTrainedModel:
    """A random-weight fp32 ``*ForCausalLM`` for ``arch`` (one of :data:`ARCHS`), in eval mode.

    4 attention heads (2 key/value heads where supported), intermediate size ``2 * hidden``,
    vocabulary covering :func:`tiny_tokenizer`. Same ``seed`` gives the same weights.

    Example:
        >>> model = tiny_model("gpt2", n_layers=2)
        >>> model.config.n_layer
        2
    """
    tok = tiny_tokenizer()
    ids: dict[str, Any] = {
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
    }
    config = _config(arch, n_layers, hidden, ids)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model


def tiny_lm(
    arch: str = "llama", seed: int = 0, n_layers: int = 4, hidden: int = 64
) -> LoadedModel:
    """:func:`tiny_model` and :func:`tiny_tokenizer` together, as a ``LoadedModel``.

    A :class:`~steerlab.model.load.LoadedModel` like ``steerlab.load_model(...)`` returns, on
    a random-weight model built in a few milliseconds: the stand-in that the docstrings'
    examples (and unit tests) pass wherever the API wants a model.

    Example:
        >>> lm = tiny_lm()
        >>> lm.n_layers, lm.hidden_size, lm.has_chat_template
        (4, 64, True)
    """
    return as_loaded(tiny_model(arch, seed=seed, n_layers=n_layers, hidden=hidden),
                     tiny_tokenizer())
