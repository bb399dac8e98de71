"""Turn items into token sequences: chat formatting and locating the answer token.

The answer token is found by tokenizing the prompt followed by each answer and taking the first
token where the answers' sequences differ. For CAA's ``"(A)"``/``"(B)"`` on a tokenizer that
splits ``"("`` off, that is the letter token after ``"("`` (the CAA read position); if a
tokenizer merges ``"(A"`` into one token, it is that token — the read position adapts instead
of silently reading the wrong token.

Example:
    >>> from steerlab.data.formats import ABItem
    >>> from steerlab.data.sequences import ab_sequences
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> ab = ab_sequences(tiny_tokenizer(), ABItem("Q?", "(A)", "(B)"))
    >>> ab.matching_id != ab.not_matching_id
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steerlab.errors import SteerlabError

Message = Mapping[str, str]
#: What a prompt may be: one user turn as text, or a whole conversation as chat messages.
Prompt = str | Sequence[Message]
ROLES = ("system", "user", "assistant")


def chat_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, str]]:
    """The message list of a prompt: a string becomes one user turn; ``system`` goes first
    (unless the messages already start with a system turn).

    Messages are checked: each a mapping with ``role`` (system, user or assistant) and a
    string ``content``, ending with a user turn.

    Example:
        >>> chat_messages("Hi", "Be brief")[0]["role"]
        'system'
        >>> chat_messages([{"role": "user", "content": "Hi"}])[-1]["content"]
        'Hi'
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        if not isinstance(prompt, Sequence) or not prompt:
            raise SteerlabError(f"a prompt is a string or a non-empty list of chat messages, "
                                f"got {type(prompt).__name__}")
        messages = []
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping):
                raise SteerlabError(f"message {i}: expected a mapping with 'role' and "
                                    f"'content', got {type(message).__name__}")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise SteerlabError(f"message {i}: field 'role': expected one of "
                                    f"{', '.join(ROLES)}, got {role!r}")
            if not isinstance(content, str):
                raise SteerlabError(f"message {i}: field 'content': expected a string, got "
                                    f"{type(content).__name__}")
            messages.append({"role": str(role), "content": content})
        if messages[-1]["role"] != "user":
            raise SteerlabError(f"the last message must be the user's turn, got "
                                f"{messages[-1]['role']!r}")
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _plain_chat(messages: Sequence[Message], assistant_prefix: str) -> str:
    """A conversation for a model without a chat template: ``Question: … Answer: …`` turns."""
    parts = []
    for message in messages:
        if message["role"] == "system":
            parts.append(f"{message['content']}\n\n")
        elif message["role"] == "user":
            parts.append(f"Question: {message['content']}\n")
        else:
            parts.append(f"Answer: {message['content']}\n")
    # No trailing space after "Answer:": a reply's first word carries its own leading space in
    # most tokenizers ("Answer:" + " I"), so prompt + reply tokenizes as the prompt's tokens
    # followed by the reply's (with "Answer: " the space merges into the reply's first token).
    return "".join(parts) + (f"Answer: {assistant_prefix}" if assistant_prefix else "Answer:")


def chat_prompt(tokenizer: Any, prompt: Prompt, assistant_prefix: str = "",
                system: str | None = None) -> str:
    r"""The text of a chat, ending inside the assistant turn with ``assistant_prefix``.

    Tokenizers without a chat template (base models) get ``"Question: ...\nAnswer:"`` (then a
    space and ``assistant_prefix`` when one is given).

    Example:
        >>> class T: chat_template = None
        >>> chat_prompt(T(), "Hi?", "(")
        'Question: Hi?\nAnswer: ('
    """
    messages = chat_messages(prompt, system)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        return str(text) + assistant_prefix
    return _plain_chat(messages, assistant_prefix)


def instruction_length(tokenizer: Any, prompt: Prompt, system: str | None = None) -> int:
    """Tokens up to the end of the (last) user turn: where CAA's ``after_instruction`` starts.

    Without a chat template the whole ``Question: ...\nAnswer:`` prompt counts.
    """
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(chat_messages(prompt, system), tokenize=False,
                                             add_generation_prompt=False)
        return len(encode(tokenizer, str(head)))
    return len(encode(tokenizer, chat_prompt(tokenizer, prompt, system=system)))


#: The GPT-2 family's document separator, which SmolLM2 and Qwen also pretrain with; GPT-2 (the
#: model of the ActAdd paper) uses it as its BOS token too.
ENDOFTEXT = "<|endoftext|>"


def document_start(tokenizer: Any) -> dict[str, Any] | None:
    """The token a document starts with under ``tokenizer``: ``{"id", "token", "prefixed"}``.

    This is the one place that decides it (ActAdd puts its vector's row 0 on this token, as
    the paper puts BOS on BOS). A tokenizer that adds a start token itself (Llama's ``<s>``,
    Gemma's ``<bos>``) gives that token with ``prefixed: False``: plain encoding already puts
    it first. Otherwise steerlab must prefix one (``prefixed: True``): the BOS token, unless
    it is a chat-turn marker the chat template writes (SmolLM2-Instruct's BOS is
    ``<|im_start|>``); else ``<|endoftext|>``; else the EOS token (again unless a turn marker).
    ``None`` when the tokenizer has none of these.

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> document_start(tiny_tokenizer())
        {'id': 0, 'token': '<|endoftext|>', 'prefixed': True}
    """
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    special = list(tokenizer("a")["input_ids"])
    if len(special) > len(plain) and special[:len(plain)] != plain:
        first = int(special[0])
        return {"id": first, "token": str(tokenizer.convert_ids_to_tokens(first)),
                "prefixed": False}
    template = str(getattr(tokenizer, "chat_template", None) or "")
    vocab = tokenizer.get_vocab()
    for text in (getattr(tokenizer, "bos_token", None), ENDOFTEXT,
                 getattr(tokenizer, "eos_token", None)):
        if isinstance(text, str) and text in vocab and text not in template:
            return {"id": int(vocab[text]), "token": text, "prefixed": True}
    return None


def with_document_start(ids: Sequence[int], start: Mapping[str, Any] | None) -> list[int]:
    """``ids`` with the document-start token ``start`` (see :func:`document_start`) in front
    when steerlab prefixes it and it is not there yet.

    Example:
        >>> with_document_start([5, 6], {"id": 0, "token": "<|endoftext|>", "prefixed": True})
        [0, 5, 6]
        >>> with_document_start([0, 5, 6], {"id": 0, "token": "<|endoftext|>", "prefixed": True})
        [0, 5, 6]
    """
    out = [int(i) for i in ids]
    if start and start.get("prefixed") and (not out or out[0] != int(start["id"])):
        return [int(start["id"]), *out]
    return out


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Plain (non-chat) token ids with the tokenizer's own special tokens (BOS if it adds one)."""
    return list(tokenizer(text)["input_ids"])


def prompt_ids(tokenizer: Any, prompt: Prompt, chat: bool = True,
               system: str | None = None) -> tuple[list[int], int]:
    """Token ids of a generation prompt and its instruction length.

    ``chat=False`` takes the text as it is (no template, the tokenizer's own special tokens);
    a list of messages needs ``chat=True``.

    Example:
        >>> class T:
        ...     chat_template = None
        ...     def __call__(self, text, add_special_tokens=True):
        ...         return {"input_ids": list(range(len(text.split())))}
        >>> prompt_ids(T(), "a b c", chat=False)
        ([0, 1, 2], 3)
    """
    if not chat:
        if not isinstance(prompt, str):
            raise SteerlabError("chat messages need chat formatting (chat=True / --chat)")
        ids = encode_plain(tokenizer, prompt)
        if not ids:
            raise SteerlabError("the prompt is empty")
        return ids, len(ids)
    full = encode(tokenizer, chat_prompt(tokenizer, prompt, system=system))
    return full, min(instruction_length(tokenizer, prompt, system), len(full))


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's usual special tokens (BOS where it adds one).

    Chat-formatted text already carries its special tokens, so none are added to it.
    """
    add_special = not bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
