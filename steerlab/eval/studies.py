"""The studies steerlab runs, one entry each: the one list the CLI, the report and the docs
are checked against (``tests/unit/test_studies.py``), so a study cannot be added half-way.

A study is a config dataclass in :mod:`steerlab.eval.configs` (light: the command line reads
it) and a module under :mod:`steerlab.eval.protocols` with ``run(config)``; its runs record
``command`` = the study's name. The config's fields declare, once, both the run settings (what
``run.json`` records and a rerun must match: :func:`~steerlab.eval.configs.fields.run_settings`,
every field but those marked :func:`~steerlab.eval.configs.fields.not_a_setting`) and the
options of ``steerlab eval NAME`` (derived by :mod:`steerlab.cli.study_command`: help, flag,
parser, range). Adding one: the config and the protocol with their tests, an entry here, an
example in ``steerlab/cli/eval.py`` (the command itself is derived), a report section
(``steerlab/report/``), a docs page ``docs/evaluation/NAME.md``. The smallest study to copy is
``capabilities``.

Example:
    >>> STUDIES["ood"].cli
    ('eval', 'ood')
    >>> STUDIES["ood"].config_class().__name__
    'OODConfig'
    >>> [s.name for s in STUDIES.values() if s.in_audit]
    ['sweep', 'samples', 'ood', 'perplexity', 'adversarial', 'prompting']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Study:
    """One study: its name (the ``command`` its runs record), what it measures, where it
    lives, how a user runs it and where it is documented."""

    name: str
    measures: str
    config: str  # the config dataclass's name in the study's module
    cli: tuple[str, ...]  # the command path under ``steerlab``
    in_audit: bool = False  # one of ``steerlab audit``'s studies
    module_name: str = ""  # under steerlab.eval.protocols; default: the name
    config_module: str = ""  # where the config lives; default: steerlab.eval.configs.NAME

    @property
    def module(self) -> str:
        """The study's module path."""
        return f"steerlab.eval.protocols.{self.module_name or self.name}"

    @property
    def docs_page(self) -> str:
        """Its page under ``docs/``."""
        return f"evaluation/{self.module_name or self.name}.md"

    def config_class(self) -> type:
        """The config dataclass (imports its light module, not the study's)."""
        where = self.config_module or f"steerlab.eval.configs.{self.name}"
        return getattr(importlib.import_module(where), self.config)

    def runner(self) -> Callable[[Any], Any]:
        """``run(config)`` of the study's module."""
        return importlib.import_module(self.module).run


def _eval(name: str, measures: str, config: str, in_audit: bool = False) -> Study:
    return Study(name, measures, config, ("eval", name), in_audit)


STUDIES: dict[str, Study] = {study.name: study for study in (
    _eval("sweep", "behaviour score over layers × strengths on held-out items", "SweepConfig",
          in_audit=True),
    _eval("samples", "the effect against the number of contrast pairs (the ~80-pair plateau)",
          "SamplesConfig", in_audit=True),
    _eval("ood", "the effect in distribution and out of it (A/B, open-ended, judged)",
          "OODConfig", in_audit=True),
    _eval("perplexity", "the fluency cost: perplexity of natural text under steering",
          "PerplexityConfig", in_audit=True),
    _eval("capabilities", "MMLU / TruthfulQA accuracy and letter mass under steering",
          "CapabilitiesConfig"),
    _eval("sentiment", "ActAdd's sentiment (or toxicity) shift of generations, words masked",
          "SentimentConfig"),
    _eval("models", "the same protocol across models (size and family)", "ModelsConfig"),
    _eval("defence", "refusal of harmful requests (plain and jailbroken) vs over-refusal",
          "DefenceConfig"),
    _eval("adversarial", "suffixes that undo steering, against random suffixes and natural text",
          "AdversarialConfig", in_audit=True),
    _eval("prompting", "steering against asking by instruction (system, prefix, few-shot)",
          "PromptingConfig", in_audit=True),
    Study("caa", "CAA's own A/B check (letter-token vector, ±1, letter mass)",
          "ReproduceConfig", ("reproduce",), module_name="reproduce",
          config_module="steerlab.eval.protocols.reproduce"),
)}

#: ``steerlab audit``'s steps in the order it runs them: its studies, then ``size`` (judged
#: across the audit's own runs, no study of its own).
AUDIT_STEPS = ("sweep", "samples", "ood", "adversarial", "perplexity", "prompting", "size")
