"""Extract steering vectors: ``extract(lm, data, method=...)`` → :class:`SteeringVector`.

Read positions: for A/B items the answer token (the letter after ``"("`` in CAA data, found per
tokenizer — see :mod:`steerlab.model.prompts`); for plain contrast pairs the last token; for ActAdd
every position of the space-padded pair.

Example:
    >>> import steerlab                                              # doctest: +SKIP
    >>> lm = steerlab.load_model("smollm2-135m")                     # doctest: +SKIP
    >>> train = steerlab.load_dataset("builtin:optimism", split="train")  # doctest: +SKIP
    >>> vec = extract(lm, train, method="mean_diff", layers="8-20")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.data.formats import ABItem, ContrastPair
from steerlab.data.loaders import Dataset, load_pairs
from steerlab.data.sequences import ab_sequences
from steerlab.errors import SteerlabError
from steerlab.extraction.calibrate import calibrate
from steerlab.extraction.methods import METHODS, get_method, register_method
from steerlab.extraction.record import record, record_pairs
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import encode_plain
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar as progress_bar
from steerlab.vector import FORMAT_VERSION, SteeringVector
from steerlab.version import __version__

__all__ = ["METHODS", "calibrate", "extract", "pair_sequences", "register_method"]


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


def _actadd_pair(lm: LoadedModel, pair: ContrastPair) -> list[list[int]]:
    """ActAdd: tokenize both prompts, right-pad the shorter with space tokens (Turner et al.)."""
    pos, neg = encode_plain(lm.tokenizer, pair.positive), encode_plain(lm.tokenizer, pair.negative)
    space = lm.tokenizer(" ", add_special_tokens=False)["input_ids"]
    if len(space) != 1:
        raise SteerlabError("actadd: the tokenizer has no single space token for padding")
    width = max(len(pos), len(neg))
    return [pos + space * (width - len(pos)), neg + space * (width - len(neg))]


def _as_items(data: Dataset | Sequence[ABItem | ContrastPair] | tuple[str, str]
              ) -> tuple[list[ABItem | ContrastPair], dict[str, Any]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(x, str) for x in data):
        positive, negative = str(data[0]), str(data[1])
        data = load_pairs([(positive, negative)], name=f"{positive!r}-{negative!r}")
    if isinstance(data, Dataset):
        info = {"name": data.name, "sha256": data.sha256, "split": data.split,
                "n_pairs": len(data)}
        return list(data.items), info
    items: list[ABItem | ContrastPair] = []
    for index, item in enumerate(data):
        if isinstance(item, list | tuple) and len(item) == 2 and \
                all(isinstance(x, str) for x in item):
            item = ContrastPair(str(item[0]), str(item[1]))  # (positive, negative) habit
        if not isinstance(item, ABItem | ContrastPair):
            raise SteerlabError(f"extract data item {index}: expected an ABItem, a "
                                f"ContrastPair or a (positive, negative) pair of strings, got "
                                f"{type(item).__name__}")
        items.append(item)
    return items, {"name": "in-memory", "sha256": None, "split": None, "n_pairs": len(items)}


def extract(model: LoadedModel | Any, data: Dataset | Sequence[ABItem | ContrastPair]
            | tuple[str, str], method: str = "mean_diff",
            layers: Sequence[int | float | str] | str | int | None = None,
            site: str | None = None, batch_size: int = 16, system: str | None = None,
            tokenizer: Any = None, progress: bool = True) -> SteeringVector:
    """Extract a steering vector from contrast data.

    ``data``: a :class:`Dataset`, a list of :class:`ABItem` / :class:`ContrastPair` /
    ``(positive, negative)`` string pairs, or one ``(positive, negative)`` pair (ActAdd).
    ``layers``: ints, "8-20", "all" (default).
    ``site``: ``block_output`` (default) or ``block_input`` (ActAdd's default, its resid_pre).

    Example:
        >>> vec = extract(lm, ("Love", "Hate"), method="actadd", layers=[6])  # doctest: +SKIP
    """
    spec = get_method(method)
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
        sequences, read_name = _actadd_pair(lm, items[0]), "all_positions"
    else:
        sequences, read_name = pair_sequences(lm, items, system=system)
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
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return SteeringVector(directions, manifest)
