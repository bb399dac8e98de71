"""What ``eval prompting`` compares on: the test items (and their ids), the behaviour asked
for in words (:class:`Instruction`: system prompt, user-turn prefix, few-shot turns from the
train split) and where the vector steers (the manifest's recommendation unless given).

Example:
    >>> instruction_for("caa:nothing-known", None, PARTS, 0, [], [])[0] is None
    True
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset, load_dataset
from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval.configs.prompting import PARTS
from steerlab.eval.judges.base import TRAIT_DESCRIPTIONS
from steerlab.util.parse import resolve_layers
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

SYSTEM_TEMPLATE = "You are an assistant who shows {name} in every reply. {title} means: {text}."
PREFIX_TEMPLATE = "Reply in a way that shows {name} ({text})."


def item_id(item: ABItem) -> str:
    """A stable id of an item: a short hash of its question and both answers.

    Example:
        >>> item_id(ABItem("Q?", "yes", "no")) == item_id(ABItem("Q?", "yes", "no"))
        True
        >>> len(item_id(ABItem("Q?", "yes", "no")))
        12
    """
    text = json.dumps([item.question, item.matching, item.not_matching])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def behaviour_name(data: str) -> str:
    """The behaviour a dataset spec names: ``caa:refusal`` → ``refusal``, a file → its stem.

    Example:
        >>> behaviour_name("caa:refusal"), behaviour_name("builtin:optimism_open")
        ('refusal', 'optimism')
        >>> behaviour_name("data/my-trait.json")
        'my-trait'
    """
    name = data.split(":", 1)[1] if ":" in data and not Path(data).exists() else Path(data).stem
    for suffix in ("_open", "_pairs", "_statements"):
        name = name.removesuffix(suffix)
    return name


@dataclass(frozen=True)
class Instruction:
    """The behaviour asked for in words: system prompt, user-turn prefix, few-shot turns."""

    behaviour: str
    text: str  # the description (or --instruction) the prompts are made from
    system: str | None
    prefix: str | None
    shots: tuple[ABItem, ...] = ()

    def context(self) -> list[dict[str, str]]:
        """The few-shot turns: user question, assistant matching answer, for each example."""
        turns = []
        for shot in self.shots:
            turns += [{"role": "user", "content": shot.question},
                      {"role": "assistant", "content": shot.matching.strip()}]
        return turns

    def question(self, question: str) -> str:
        """The user turn: the prefix (if any), a blank line, the question."""
        if not self.prefix:
            return question
        return f"{self.prefix}\n\n{question}" if question else self.prefix

    def apply(self, item: ABItem) -> ABItem:
        """``item`` with its question behind the prefix (answers unchanged)."""
        return ABItem(self.question(item.question), item.matching, item.not_matching)

    def describe(self) -> dict[str, Any]:
        """Everything the prompted conditions read (stored in the run's settings)."""
        return {"behaviour": self.behaviour, "text": self.text, "system": self.system,
                "prefix": self.prefix, "shot_ids": [item_id(s) for s in self.shots]}


def instruction_for(data: str, instruction: str | None, parts: Sequence[str], shots: int,
                    train: Sequence[ABItem], test: Sequence[ABItem],
                    seed: int = 0) -> tuple[Instruction | None, str]:
    """The :class:`Instruction` for ``data`` (or why there is none).

    The words: ``instruction`` if given, else the behaviour's description
    (:data:`~steerlab.eval.judges.base.TRAIT_DESCRIPTIONS`). The few-shot examples: a seeded
    draw of ``shots`` train items whose question is no test item's question.

    Example:
        >>> train = [ABItem(f"T{i}?", "(A)", "(B)") for i in range(5)]
        >>> got, why = instruction_for("caa:refusal", None, PARTS, 2, train, [train[0]])
        >>> got.system.startswith("You are an assistant who shows refusal"), len(got.shots)
        (True, 2)
        >>> train[0] in got.shots
        False
        >>> instruction_for("caa:nothing-known", None, PARTS, 2, train, [])[0] is None
        True
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise SteerlabError(f"--prompt-parts: expected some of {', '.join(PARTS)}, got "
                            f"{list(parts)}")
    name = behaviour_name(data)
    if instruction is not None and instruction.strip():
        text = " ".join(instruction.split())
        system, prefix = text, text
    elif name in TRAIT_DESCRIPTIONS:
        text = TRAIT_DESCRIPTIONS[name]
        words = name.replace("-", " ").replace("_", " ")
        system = SYSTEM_TEMPLATE.format(name=words, title=words[:1].upper() + words[1:],
                                        text=text)
        prefix = PREFIX_TEMPLATE.format(name=words, text=text)
    else:
        return None, (f"no instruction for {name!r}: the behaviour has no description "
                      "(steerlab.eval.judges.base.TRAIT_DESCRIPTIONS); give --instruction")
    examples: tuple[ABItem, ...] = ()
    if "fewshot" in parts and shots > 0:
        held_out = {item.question for item in test} | {item_id(item) for item in test}
        pool = [item for item in train
                if item.question not in held_out and item_id(item) not in held_out]
        if not pool:
            return None, f"{data}: no train item left for few-shot examples"
        picked = sorted(random.Random(seed).sample(range(len(pool)), min(shots, len(pool))))
        examples = tuple(pool[i] for i in picked)
    return Instruction(name, text, system if "system" in parts else None,
                       prefix if "prefix" in parts else None, examples), ""


def split_items(data: str, split: str, seed: int, form: str) -> Dataset:
    """One split of ``data`` as scored items in ``form`` (``open``: the options' texts).

    Plain contrast pairs become open answers to an empty question (as in ``eval sweep``).
    """
    bh.check_format(form)
    ds = load_dataset(data, split=split, seed=seed)
    if ds.kind == "pairs":
        if form == "ab":
            raise SteerlabError(f"{data}: plain contrast pairs have no A/B letters; use "
                                "--format open")
        return ds.as_answers()
    if form == "open":
        ds = ds.open_answers()
        if not len(ds):
            raise SteerlabError(f"{data}: no item of the {split} split has parseable "
                                "'Choices: (A) ... (B) ...' options for --format open")
    return ds


def resolve_steering(vec: SteeringVector, layers: str | None, unit: Unit | None,
                     value: float | None, n_layers: int) -> tuple[int, Unit, float, str]:
    """``(layer, unit, value, where from)``: the given ones, else the manifest's
    ``recommended`` layer and strength (written by ``eval sweep``), else the vector's only
    layer; one-line errors otherwise.

    Example:
        >>> resolve_steering(vec, None, None, None, 30)                  # doctest: +SKIP
        (14, 'strength', 0.4, 'recommended by eval sweep on caa:refusal/open val ...')
    """
    recommended = vec.manifest.get("recommended") or {}
    source = []
    if layers is None:
        if isinstance(recommended.get("layer"), int):
            layer = int(recommended["layer"])
            source.append("layer from the vector's manifest")
        elif len(vec.layers) == 1:
            layer = vec.layers[0]
        else:
            raise SteerlabError(f"give --layers (one layer; the vector has {vec.layers} and "
                                "no recommended layer)")
    else:
        got = resolve_layers(layers, n_layers)
        if len(got) != 1:
            raise SteerlabError(f"--layers: the comparison steers at one layer, got {got}")
        layer = got[0]
    if value is None:
        unit = unit or "strength"
        if not isinstance(recommended.get(unit), int | float):
            raise SteerlabError(f"give --strengths (one value; the vector's manifest "
                                f"recommends no {unit})")
        value = float(recommended[unit])
        source.append(f"{unit} from the vector's manifest")
    if value == 0:
        raise SteerlabError("the vector's value must be non-zero (0 is the baseline)")
    if layer not in vec.layers:
        raise SteerlabError(f"the vector has no direction for layer {layer}; it has {vec.layers}")
    note = (f"{'; '.join(source)} ({recommended.get('chosen_by', 'eval sweep')})"
            if source else "given")
    return layer, unit or "strength", float(value), note
