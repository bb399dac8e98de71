"""A study's ``run.json`` settings are derived from its config's fields (``run_settings``):
every field is a setting unless marked ``not_a_setting``, so a new field cannot silently stay
out of ``run.json``, and the derived dicts are the ones the hand-written ``settings()`` methods
produced (written out below), so existing run directories keep resuming."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from steerlab.eval.configs.fields import SETTING, SETTING_KEY, WHEN_SET, run_settings
from steerlab.eval.studies import STUDIES

VECTOR = Path("v.safetensors")

#: The required arguments of each study whose config records ``run.json`` settings.
SMALL: dict[str, dict[str, Any]] = {
    "sweep": {"out": "o", "data": "caa:refusal", "unit": "strength", "values": [-0.5, 0.5]},
    "samples": {"out": "o", "data": "caa:refusal", "layer": 3},
    "ood": {"out": "o", "vector": VECTOR, "trait": "refusal"},
    "perplexity": {"out": "o", "vector": VECTOR, "layers": "3", "unit": "strength",
                   "values": (0.0, 0.5)},
    "capabilities": {"out": "o", "vector": VECTOR, "layers": "3", "unit": "strength",
                     "values": (0.0, 0.5)},
    "sentiment": {"out": "o", "layers": "3", "unit": "coefficient", "values": (0.0, 4.0)},
    "models": {"out": "o", "models": ["a", "b"], "data": "caa:refusal"},
    "defence": {"out": "o", "vector": VECTOR, "layers": "3"},
    "adversarial": {"out": "o", "vector": VECTOR, "layers": "3", "value": 0.4},
    "prompting": {"out": "o", "data": "caa:refusal", "vector": VECTOR},
}

#: ``caa`` records the arguments of ``reproduce.caa_check`` (its config, ``ReproduceConfig``,
#: drives the whole reproduction and has no run settings of its own).
NO_RUN_SETTINGS = {"caa"}

#: Settings whose value a study computes from its fields rather than records as given.
COMPUTED = {"sentiment": {"scorer"}}  # the scorer toxicity runs with, whatever --scorer says


def _config(name: str, **extra: Any) -> Any:
    return STUDIES[name].config_class()(**{**SMALL[name], **extra})


# What the hand-written settings() returned before they were derived (JSON-normal, as run.json
# records them): a rename (form → "format", values → "strengths", parts → "prompt_parts"), a
# computed value (sentiment's scorer) and a setting recorded only when set (ood's id_limit).
EXPECTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("capabilities", {"batch_size": 1}, {
        "benchmarks": ["mmlu", "truthfulqa"], "layers": "3", "limit": 0,
        "model": "smollm2-135m", "positions": "all", "seed": 0, "unit": "strength",
        "values": [0.0, 0.5], "vector": "v.safetensors"}),
    ("models", {"batch_size": 1}, {
        "data": "caa:refusal", "depths": "0.3,0.4,0.5,0.6,0.7", "format": "open", "limit": 0,
        "models": ["a", "b"], "seed": 0, "strengths": [-0.5, 0.0, 0.5], "train_limit": 0}),
    ("prompting", {"write_verdict": False}, {
        "data": "caa:refusal", "fluency_limit": 0, "format": "open", "instruction": None,
        "judge": None, "layers": None, "limit": 40, "max_new_tokens": 32,
        "model": "smollm2-135m", "positions": "all",
        "prompt_parts": ["system", "prefix", "fewshot"], "seed": 0, "shots": 3, "unit": None,
        "value": None, "vector": "v.safetensors"}),
    ("sentiment", {}, {
        "layers": "3", "limit": 40, "mask": None, "max_new_tokens": 40,
        "model": "smollm2-135m", "pad": None, "pair": None, "positions": None,
        "prompt_sets": ["neutral", "negative"], "samples": 1, "scorer": "classifier",
        "seed": 0, "target": "positive", "task": "sentiment", "temperature": 1.0,
        "top_p": 0.9, "unit": "coefficient", "values": [0.0, 4.0], "vector": None}),
    ("sentiment", {"task": "toxicity", "pair": (" love", " hate"), "mask": ("x",),
                   "vector": Path("v"), "pad": "space"}, {
        "layers": "3", "limit": 40, "mask": ["x"], "max_new_tokens": 40,
        "model": "smollm2-135m", "pad": "space", "pair": [" love", " hate"],
        "positions": None, "prompt_sets": ["neutral", "negative"], "samples": 1,
        "scorer": "profanity-check", "seed": 0, "target": "positive", "task": "toxicity",
        "temperature": 1.0, "top_p": 0.9, "unit": "coefficient", "values": [0.0, 4.0],
        "vector": "v"}),
    ("ood", {}, {
        "formats": ["choice-qa", "open-ended"], "id_data": None, "id_format": "ab",
        "judge": "local:qwen2.5-coder-0.5b", "layers": None,
        "lengths": ["short", "medium", "long"], "limit": 0, "max_new_tokens": 64,
        "model": "smollm2-135m", "seed": 0, "trait": "refusal", "unit": "strength",
        "values": [-0.5, 0.0, 0.5], "vector": "v.safetensors"}),
    ("ood", {"id_limit": 7, "values": [1.0]}, {
        "formats": ["choice-qa", "open-ended"], "id_data": None, "id_format": "ab",
        "id_limit": 7, "judge": "local:qwen2.5-coder-0.5b", "layers": None,
        "lengths": ["short", "medium", "long"], "limit": 0, "max_new_tokens": 64,
        "model": "smollm2-135m", "seed": 0, "trait": "refusal", "unit": "strength",
        "values": [1.0], "vector": "v.safetensors"}),
]


@pytest.mark.parametrize(("name", "extra", "expected"), EXPECTED,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(EXPECTED)])
def test_settings_are_what_run_json_recorded_before(name: str, extra: dict[str, Any],
                                                    expected: dict[str, Any]) -> None:
    assert _config(name, **extra).settings() == expected


def test_every_study_with_run_settings_is_covered() -> None:
    assert set(SMALL) | NO_RUN_SETTINGS == set(STUDIES)
    for name in NO_RUN_SETTINGS:
        assert not hasattr(STUDIES[name].config_class(), "settings")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_field_is_a_setting_or_marked(name: str) -> None:
    """A field is recorded (under its name, or the key it declares) unless it is marked
    ``not_a_setting``; the marked ones (out, batch size, ...) never reach ``run.json``."""
    cfg = _config(name)
    settings, derived = cfg.settings(), run_settings(cfg)
    assert set(settings) == set(derived)
    computed = {k for k in settings if settings[k] != derived[k]}
    assert computed <= COMPUTED.get(name, set()), f"{name}: {computed} not derived"
    recorded: set[str] = set()
    for field in dataclasses.fields(cfg):
        key = field.metadata.get(SETTING_KEY, field.name)
        if field.metadata.get(SETTING, True) is False:
            assert key not in settings, f"{name}.{field.name} is marked not a setting"
        else:
            assert key in settings or (getattr(cfg, field.name) is None and field.metadata.get(
                WHEN_SET)), f"{name}.{field.name} is missing from settings()"
            recorded |= {key} & set(settings)
    assert set(settings) == recorded, f"{name}: settings() holds keys no field declares"
    assert "out" not in settings


@pytest.mark.parametrize("name", sorted(SMALL))
def test_not_a_setting_changes_nothing(name: str) -> None:
    """Changing a field marked not-a-setting leaves the settings as they were: such a rerun
    resumes."""
    cls = STUDIES[name].config_class()
    marked = [f for f in dataclasses.fields(cls) if f.metadata.get(SETTING, True) is False]
    assert any(f.name == "out" for f in marked)
    base = _config(name)
    for field in marked:
        if field.name == "batch_size":
            assert _config(name, batch_size=1).settings() == base.settings()
    assert _config(name, out="elsewhere").settings() == base.settings()
