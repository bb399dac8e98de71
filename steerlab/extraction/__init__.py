"""Extract steering vectors: ``extract(lm, data, method=...)`` → :class:`SteeringVector`.

Read positions: for A/B items the answer token (the letter after ``"("`` in CAA data, found per
tokenizer — see :mod:`steerlab.model.prompts`); for plain contrast pairs the last token; for ActAdd
every position of the pair, which must line up token for token (see :func:`actadd_pair`).

Example:
    >>> import steerlab
    >>> lm = steerlab.load_model("smollm2-135m")                     # doctest: +SKIP
    >>> train = steerlab.load_dataset("builtin:optimism", split="train")
    >>> vec = extract(lm, train, method="mean_diff", layers="8-20")  # doctest: +SKIP

    The same on a tiny random-weight model (4 layers, hidden size 64), as the tests run it:

    >>> from steerlab.testing.tiny import tiny_lm
    >>> lm = tiny_lm()
    >>> vec = extract(lm, train.head(16), method="mean_diff", layers="1-3", progress=False)
    >>> vec.method, vec.layers, vec.hidden_size
    ('mean_diff', [1, 2, 3], 64)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.data.formats import ABItem, ContrastPair, check_pair
from steerlab.data.loaders import Dataset, load_pairs
from steerlab.data.sequences import ab_sequences
from steerlab.errors import SteerlabError
from steerlab.extraction.calibrate import calibrate
from steerlab.extraction.methods import METHODS, get_method, register_method
from steerlab.extraction.record import record, record_pairs
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import document_start, encode_plain, with_document_start
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar as progress_bar
from steerlab.util.vocabulary import Site
from steerlab.vector import FORMAT_VERSION, SteeringVector
from steerlab.version import __version__

__all__ = ["METHODS", "PADS", "actadd_pair", "calibrate", "check_pad", "extract",
           "pair_sequences", "register_method"]

#: ActAdd's ways to make a pair of unequal token lengths line up (only when asked): ``space``
#: right-pads the shorter prompt with space tokens, as the ActAdd paper does.
PADS = ("space",)


def pair_sequences(lm: LoadedModel, items: Sequence[ABItem | ContrastPair],
                   system: str | None = None) -> tuple[list[list[int]], str]:
    """Token sequences interleaved positive, negative, ... and the read-position name."""
    sequences: list[list[int]] = []
    if not items:
        raise SteerlabError("no contrast items to extract from")
    kinds = {type(item).__name__ for item in items}
    if len(kinds) != 1:
        raise SteerlabError(f"contrast items mix kinds ({', '.join(sorted(kinds))}); "
                            "use all ABItem or all ContrastPair")
    if isinstance(items[0], ABItem):
        for item in items:
            assert isinstance(item, ABItem)
            ab = ab_sequences(lm.tokenizer, item, system=system)
            sequences += [ab.matching, ab.not_matching]
        return sequences, "answer_token"
    for item in items:
        assert isinstance(item, ContrastPair)
        sequences += [encode_plain(lm.tokenizer, item.positive),
                      encode_plain(lm.tokenizer, item.negative)]
    return sequences, "last_token"


def check_pad(pad: str | None) -> str | None:
    """``pad`` itself when it is one of :data:`PADS` or ``None`` (refuse what does not line up).

    Example:
        >>> check_pad("space")
        'space'
    """
    if pad is not None and pad not in PADS:
        raise SteerlabError(f"pad must be one of {', '.join(PADS)} (or None: refuse pairs "
                            f"that do not line up), got {pad!r}")
    return pad


def _tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    return [str(tokenizer.decode([i])) for i in ids]


def _aligned_variant(tokenizer: Any, pair: ContrastPair) -> tuple[str, str] | None:
    """A leading-space (then lower-case) spelling of ``pair`` that lines up, if one does."""
    for fix in (lambda t: " " + t.lstrip(), lambda t: " " + t.strip().lower()):
        pos, neg = fix(pair.positive), fix(pair.negative)
        if pos != neg and (pos, neg) != (pair.positive, pair.negative) and \
                len(encode_plain(tokenizer, pos)) == len(encode_plain(tokenizer, neg)):
            return pos, neg
    return None


def actadd_pair(tokenizer: Any, pair: ContrastPair, pad: str | None = None
                ) -> tuple[list[list[int]], dict[str, Any]]:
    """ActAdd's two token rows (positive, negative) and what the manifest records of them.

    Both rows start with the tokenizer's document-start token (its BOS, or
    ``<|endoftext|>`` where it adds none: :func:`~steerlab.model.prompts.document_start`), so
    the vector's row 0 is that token's (zero) difference and row 1 lands on the first word, as
    the paper's BOS-on-BOS alignment has it. The rows must line up token for token: prompts
    of different token lengths are refused in one line naming both tokenizations, unless
    ``pad="space"`` asks to right-pad the shorter with space tokens (the paper's padding).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> rows, info = actadd_pair(tiny_tokenizer(), ContrastPair("Hate", "hate"))
        >>> info["pair_tokens"]
        [['<|endoftext|>', 'H', 'at', 'e'], ['<|endoftext|>', 'h', 'at', 'e']]
    """
    check_pad(pad)
    check_pair(pair, "actadd pair")
    start = document_start(tokenizer)
    words = [encode_plain(tokenizer, pair.positive), encode_plain(tokenizer, pair.negative)]
    pos, neg = (with_document_start(ids, start) for ids in words)
    if len(pos) != len(neg) and pad is None:
        variant = _aligned_variant(tokenizer, pair)
        hint = (f"e.g. {variant[0]!r}/{variant[1]!r} line up under this tokenizer" if variant
                else "e.g. other words, or the same with a leading space")
        raise SteerlabError(
            f"actadd: {pair.positive!r} and {pair.negative!r} do not line up token for token: "
            f"{_tokens(tokenizer, words[0])} vs {_tokens(tokenizer, words[1])} "
            f"({len(words[0])} vs {len(words[1])} tokens), so the vector's rows would pair "
            f"different words; choose prompts of equal token length ({hint}) or pad the "
            "shorter with spaces (pad='space'; on the command line --pad space)")
    if len(pos) != len(neg):
        space = tokenizer(" ", add_special_tokens=False)["input_ids"]
        if len(space) != 1:
            raise SteerlabError("actadd: the tokenizer has no single space token for padding")
        width = max(len(pos), len(neg))
        pos, neg = pos + space * (width - len(pos)), neg + space * (width - len(neg))
    info = {"document_start": start, "pad": pad,
            "pair_tokens": [_tokens(tokenizer, pos), _tokens(tokenizer, neg)]}
    return [pos, neg], info


def _as_items(data: Dataset | Sequence[ABItem | ContrastPair] | tuple[str, str]
              ) -> tuple[list[ABItem | ContrastPair], dict[str, Any]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(x, str) for x in data):
        positive, negative = str(data[0]), str(data[1])
        check_pair(ContrastPair(positive, negative), "extract")
        data = load_pairs([(positive, negative)], name=f"{positive!r}-{negative!r}")
    if isinstance(data, Dataset):
        info = {"name": data.name, "sha256": data.sha256, "split": data.split,
                "n_pairs": len(data)}
        items = list(data.items)
    else:
        items = []
        for index, item in enumerate(data):
            if isinstance(item, list | tuple) and len(item) == 2 and \
                    all(isinstance(x, str) for x in item):
                item = ContrastPair(str(item[0]), str(item[1]))  # (positive, negative) habit
            if not isinstance(item, ABItem | ContrastPair):
                raise SteerlabError(f"extract data item {index}: expected an ABItem, a "
                                    f"ContrastPair or a (positive, negative) pair of strings, "
                                    f"got {type(item).__name__}")
            items.append(item)
        info = {"name": "in-memory", "sha256": None, "split": None, "n_pairs": len(items)}
    for index, item in enumerate(items):
        if isinstance(item, ContrastPair):
            check_pair(item, f"extract data item {index}" if len(items) > 1 else "extract")
    return items, info


def extract(model: LoadedModel | Any, data: Dataset | Sequence[ABItem | ContrastPair]
            | tuple[str, str], method: str = "mean_diff",
            layers: Sequence[int | float | str] | str | int | None = None,
            site: Site | None = None, batch_size: int = 16, system: str | None = None,
            tokenizer: Any = None, progress: bool = True,
            pad: str | None = None) -> SteeringVector:
    """Extract a steering vector from contrast data.

    ``data``: a :class:`Dataset`, a list of :class:`ABItem` / :class:`ContrastPair` /
    ``(positive, negative)`` string pairs, or one ``(positive, negative)`` pair (ActAdd).
    A pair whose texts are identical or empty is refused.
    ``layers``: ints, "8-20", "all" (default).
    ``site``: ``block_output`` (default) or ``block_input`` (ActAdd's default, its resid_pre).

    ActAdd (``method="actadd"``): both prompts get the tokenizer's document-start token in
    front (row 0 of the vector lands on it, recorded in the manifest as ``document_start``;
    generation prefixes the same token, see :func:`steerlab.generate`), and they must line
    up token for token: prompts of different token lengths are refused unless
    ``pad="space"`` asks to right-pad the shorter with space tokens (the paper's padding; the
    one way to pad, also ``--pad space`` on the command line). See :func:`actadd_pair`.

    Example:
        >>> vec = extract(lm, (" love", " hate"), method="actadd", layers=[6])  # doctest: +SKIP

        On the tiny test tokenizer " love" is one token longer than " hate", so pad:

        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> vec = extract(lm, (" love", " hate"), method="actadd", layers=[2], pad="space",
        ...               progress=False)
        >>> vec.method, vec.site, vec.layers
        ('actadd', 'block_input', [2])
    """
    spec = get_method(method)
    if pad is not None and spec.read != "all":
        raise SteerlabError(f"pad= applies to ActAdd's one prompt pair (method='actadd'), not "
                            f"to method {method!r}")
    lm = as_loaded(model, tokenizer)
    if lm.tokenizer is None:
        raise SteerlabError("extract needs a tokenizer: pass a LoadedModel or tokenizer=")
    items, info = _as_items(data)
    site = site or spec.default_site
    n_layers = lm.n_layers
    wanted = resolve_layers("all" if layers is None else layers, n_layers)
    started = time.time()
    if spec.read == "all":
        if len(items) != 1 or not isinstance(items[0], ContrastPair):
            raise SteerlabError(f"{method} takes exactly one (positive, negative) text pair, "
                                f"got {len(items)} item(s)")
        sequences, pair_info = actadd_pair(lm.tokenizer, items[0], pad)
        read_name = "all_positions"
    else:
        sequences, read_name = pair_sequences(lm, items, system=system)
        pair_info = {}
    step = max(2, batch_size - batch_size % 2)
    accumulators = {k: spec.make() for k in wanted}
    norm_sum = dict.fromkeys(wanted, 0.0)
    norm_count = 0
    bar = progress_bar(len(sequences), f"extract {method} ({len(items)} pairs)", unit="seq",
                       enabled=progress)
    with bar:
        batches = (record(lm.model, sequences, wanted, site=site, read="all", batch_size=step,
                          pad_id=lm.pad_id, progress=bar) if spec.read == "all" else
                   record_pairs(lm.model, sequences, wanted, site=site, batch_size=step,
                                pad_id=lm.pad_id, progress=bar))
        for batch in batches:
            norm_count += batch.norm_count
            pairs = [i // 2 for i in (batch.order or range(len(batch.lengths)))[0::2]]
            for k in wanted:
                acts = batch.acts[k]
                norm_sum[k] += batch.norm_sum[k]
                accumulators[k].update(acts[0::2], acts[1::2], pairs)
    directions: dict[int, torch.Tensor] = {}
    stats: dict[str, dict[str, Any]] = {}
    for k in wanted:
        directions[k], stats[str(k)] = accumulators[k].result()
    manifest = {
        "format_version": FORMAT_VERSION, "model_id": lm.model_id, "model_revision": lm.revision,
        "n_layers": n_layers, "site": site, "method": method, "read_position": read_name,
        "dataset": info, "system_prompt": system, "stats": stats,
        # no calibration (rather than a zero norm) when every sequence is a single token
        "resid_norms": ({str(k): norm_sum[k] / norm_count for k in wanted}
                        if norm_count else None),
        "steerlab_version": __version__, "extract_seconds": round(time.time() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **pair_info,
    }
    return SteeringVector(directions, manifest)
