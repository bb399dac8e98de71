"""What a steering check found: one :class:`Finding` per check, gathered in a
:class:`ModelReport` with the model's structure and one verdict.

Example:
    >>> report = ModelReport("llama", findings=[Finding("blocks", True, "2 blocks")])
    >>> report.verdict, report.failures
    ('exact', [])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlab.errors import SteerlabError

__all__ = ["Finding", "ModelReport", "crashed", "refused"]


@dataclass
class Finding:
    """One check: what was checked, whether it held, and the numbers behind it.

    ``error`` is the largest |difference| from the reference, ``delta`` the largest change the
    steering made; ``refused`` marks a loud refusal: a :class:`~steerlab.errors.SteerlabError`
    from steerlab, or the model itself failing the unsteered baseline of a check.
    """

    name: str
    ok: bool
    detail: str = ""
    error: float | None = None
    delta: float | None = None
    refused: bool = False
    noop: bool = False


@dataclass
class ModelReport:
    """What :func:`check_model` found: the model's structure and one finding per check."""

    model_type: str
    blocks_path: str = ""
    n_blocks: int = 0
    width: int | None = None
    final_norm: str | None = None
    kinds: dict[str, list[int]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)

    @property
    def refusal(self) -> str | None:
        """The first refusal steerlab raised, if any."""
        return next((f.detail for f in self.findings if f.refused), None)

    @property
    def failures(self) -> list[Finding]:
        """Findings that neither held nor were refused."""
        return [f for f in self.findings if not f.ok and not f.refused]

    @property
    def verdict(self) -> str:
        """``exact`` (every check held), ``refused`` (steerlab said no, loudly), ``no-op``
        (a steering silently changed nothing) or ``mismatch`` (it silently changed the wrong
        thing, or a check failed otherwise)."""
        if any(f.noop for f in self.failures):
            return "no-op"
        if self.failures:
            return "mismatch"
        if self.refusal is not None:
            return "refused"
        return "exact"


def refused(name: str, exc: SteerlabError) -> Finding:
    """The check ``name`` refused by steerlab, loudly (what the user would see)."""
    return Finding(name, False, f"steerlab refuses: {exc}", refused=True)


def crashed(name: str, exc: BaseException) -> Finding:
    """The check ``name`` failed otherwise: the exception, on one line."""
    text = " ".join(str(exc).split())[:160]
    return Finding(name, False, f"{type(exc).__name__}: {text}")
