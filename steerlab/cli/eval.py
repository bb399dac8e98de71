"""``steerlab eval ...``: the studies, each command derived from the study's config.

Every study writes ``results.jsonl`` and plots into ``--out`` and resumes when rerun with the
same settings. The options are the config's fields (:mod:`steerlab.eval.configs`, turned into a
command by :mod:`steerlab.cli.study_command`); the protocols themselves are plain Python in
:mod:`steerlab.eval.protocols`.

Example:
    $ steerlab eval sweep --data caa:refusal --layers 2-26:4 --strengths=-0.4,0,0.4 -o runs/r
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steerlab.cli.study_command import study_command
from steerlab.eval.studies import STUDIES

HELP = ("Evaluate steering vectors: layer × strength sweeps, sample counts, OOD, perplexity, "
        "capabilities, sentiment/toxicity, model size, steering vs prompting. Each writes "
        "results.jsonl + plots into --out and resumes.")

#: Each study's example, shown under its --help (and run by the docs' tests).
EXAMPLES = {
    "sweep": ("steerlab eval sweep --data caa:refusal --layers 2-26:4 "
                "--strengths=-0.4,0,0.4 --train-limit 160 -o runs/refusal"),
    "samples": ("steerlab eval samples --data caa:refusal --layers 14 --n 1,5,20,80 "
                "--seeds 3 -o runs/refusal-n"),
    "ood": ("steerlab eval ood --vector agree.safetensors --layers 12 --trait "
                "agreeableness --strengths=-0.5,0,0.5 --limit 4 -o runs/agree-ood"),
    "perplexity": ("steerlab eval perplexity --vector v.safetensors --layers 12 "
                "--strengths=0,0.1,0.2 -o runs/ppl"),
    "capabilities": ("steerlab eval capabilities --vector v.safetensors "
                "--layers 12 --limit 100 -o runs/cap"),
    "sentiment": ('steerlab eval sentiment --pair " love" " hate" --layers 6 '
                "--coefficients=0,2,5,10 -o runs/love"),
    "models": ("steerlab eval models --models smollm2-135m,qwen2.5-coder-0.5b "
                "--data caa:sycophancy -o runs/size"),
    "defence": ("steerlab eval defence --model qwen2.5-coder-0.5b --vector "
                "refusal.safetensors --layers 12 --strengths=0.2,0.4 --condition "
                "harm.safetensors -o runs/def"),
    "adversarial": ("steerlab eval adversarial --vector refusal.safetensors "
                "--layers 12 --strengths 0.4 --data caa:refusal --limit 5 "
                "-o runs/adv"),
    "prompting": ("steerlab eval prompting --data caa:refusal --vector "
                "runs/refusal/vector.safetensors --layers 14 --strengths 0.4 "
                "-o runs/refusal-prompting"),
}

COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    (name, study_command(STUDIES[name].config_class(), STUDIES[name].module), example)
    for name, example in EXAMPLES.items()]
