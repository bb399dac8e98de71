"""The demo job (``steerlab demo`` / ``make demo``): optimism steering on SmolLM2-135M.

1. Extract a mean-difference vector from the built-in optimistic/pessimistic answer pairs
   (train split, read at the last token of each answer).
2. Generate for a few held-out everyday prompts unsteered and at ±strength, side by side.
3. Score held-out items (test split) at several strengths: the open-answer preference score
   (p(optimistic reply) vs p(pessimistic reply)) and the CAA letter score, each with n and a
   95 % interval.

Example:
    >>> run_demo(layer=10, strength=0.3)                                # doctest: +SKIP
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from steerlab.data.loaders import load_dataset
from steerlab.extraction import extract
from steerlab.model.load import DEFAULT_MODEL, load_model
from steerlab.scoring.ab import score_ab, score_answers
from steerlab.scoring.generate import generate
from steerlab.steering.spec import SteeringSpec

PROMPTS = (
    "What do you think about Mondays?",
    "My team lost the match yesterday. What now?",
    "Describe what the next ten years could look like.",
    "I am starting a new job tomorrow.",
)


def run_demo(model: str = DEFAULT_MODEL, layer: int = 10, strength: float = 0.3,
             max_new_tokens: int = 40, console: Console | None = None) -> None:
    """Run the demo and print its tables."""
    out = console or Console()
    started = time.time()
    out.rule(f"steerlab demo — optimism on {model}")
    lm = load_model(model)
    out.print(f"model: {lm.model_id}  ({lm.n_layers} layers × d={lm.hidden_size}), "
              f"loaded in {time.time() - started:.1f} s")
    train = load_dataset("builtin:optimism_pairs", split="train")
    t0 = time.time()
    vec = extract(lm, train, method="mean_diff", layers=[layer])
    out.print(f"vector: mean_diff of {len(train)} optimistic − pessimistic answer pairs at "
              f"layer {layer} (norm {vec.directions[layer].norm():.1f}, mean residual norm "
              f"{vec.resid_norm(layer):.1f}); {time.time() - t0:.1f} s")

    strengths = (-strength, 0.0, strength)
    rows = [(s, i) for s in strengths for i in range(len(PROMPTS))]
    specs = [[SteeringSpec(vec, layers=[layer], strength=s)] if s else [] for s, _ in rows]
    out.print(f"generating {len(rows)} answers ({len(PROMPTS)} prompts × 3 strengths, "
              f"{max_new_tokens} tokens) in one batch, a different steering per row ...")
    texts = generate(lm, [PROMPTS[i] for _, i in rows], row_steering=specs,
                     max_new_tokens=max_new_tokens, batch_size=len(rows), progress=True)
    columns = {s: [t for (s2, _), t in zip(rows, texts, strict=True) if s2 == s]
               for s in strengths}
    table = Table(title=f"greedy generations, layer {layer}, strength = multiple of the residual "
                  "norm", show_lines=True)
    table.add_column("prompt", style="bold")
    for s in strengths:
        table.add_column(f"strength {s:+.2f}" + (" (pessimistic)" if s < 0 else
                                                  " (optimistic)" if s > 0 else " (unsteered)"))
    for i, prompt in enumerate(PROMPTS):
        table.add_row(prompt, *(columns[s][i] for s in strengths))
    out.print(table)

    open_test = load_dataset("builtin:optimism_open", split="test")
    ab_test = load_dataset("builtin:optimism", split="test")
    scores = Table(title="held-out behaviour scores (test split; 95 % interval)")
    scores.add_column("strength", justify="right")
    scores.add_column("open-answer score p(opt)/(p(opt)+p(pess))")
    scores.add_column("mean log-odds (nats)", justify="right")
    scores.add_column("A/B letter score (CAA)")
    out.print(f"scoring {len(open_test)} held-out open-answer items and {len(ab_test)} A/B "
              "items at 5 strengths ...")
    for s in (-strength, -strength / 2, 0.0, strength / 2, strength):
        spec = SteeringSpec(vec, layers=[layer], strength=s) if s else None
        open_res = score_answers(lm, open_test, spec, progress=True)
        ab_res = score_ab(lm, ab_test, spec, progress=True)
        scores.add_row(f"{s:+.2f}", str(open_res), f"{open_res.mean_propensity:+.2f}", str(ab_res))
    out.print(scores)
    out.print("The open-answer score reads what the model would say; the A/B letter score needs a "
              "model that follows multiple-choice formats, which a 135M model barely does (it "
              "stays near 0.5 — see docs/concepts/small-models.md).")
    out.print(f"demo finished in {time.time() - started:.0f} s")
