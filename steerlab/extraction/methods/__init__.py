"""Extraction methods: a registry of small accumulators from paired activations to a direction.

Every method is an :class:`Accumulator`: ``update(positive, negative, index)`` is fed each
batch of paired activations at one layer (``index`` = the pairs' positions in the data), and
``result()`` gives the direction and its stats. :data:`METHODS` maps a name to a
:class:`Method` — how to read the activations (``last``: one position per sequence; ``all``:
every position, ActAdd) and which site it defaults to. Register a new method with
:func:`register_method`.

* ``mean_diff`` (CAA) — streaming mean of paired differences (memory independent of n);
* ``pca`` (RepE) — first principal component of the centred paired differences, sign fixed so
  most pairs project positive;
* ``probe`` — logistic-regression weight vector (unit norm) separating positive from negative;
* ``actadd`` — position-resolved difference of one aligned pair.

Example:
    >>> import torch
    >>> acc = METHODS["mean_diff"].make()
    >>> acc.update(torch.ones(2, 3), torch.zeros(2, 3), [0, 1])
    >>> acc.result()[0].tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from steerlab.errors import SteerlabError
from steerlab.util.vocabulary import Site

Stats = dict[str, Any]


class Accumulator(Protocol):
    """Collects paired activations of one layer and turns them into a direction."""

    def update(self, positive: torch.Tensor, negative: torch.Tensor,
               index: Sequence[int]) -> None:
        """Add a batch of pairs (``index``: their positions in the data)."""
        ...

    def result(self) -> tuple[torch.Tensor, Stats]:
        """The direction (``[d]``, or ``[n_pos, d]`` for ActAdd) and its stats."""
        ...


@dataclass(frozen=True)
class Method:
    """One extraction method: its accumulator and how its activations are read."""

    name: str
    make: Callable[[], Accumulator]
    read: str = "last"  # "last": one position per sequence; "all": every position (ActAdd)
    default_site: Site = "block_output"
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method in :data:`METHODS`.

    Example:
        >>> register_method(Method("mean_diff_copy", METHODS["mean_diff"].make)).name
        'mean_diff_copy'
        >>> del METHODS["mean_diff_copy"]
    """
    if method.read not in ("last", "all"):
        raise SteerlabError(f"method {method.name!r}: read must be 'last' or 'all'")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name`` (one-line error listing the known ones)."""
    if name not in METHODS:
        raise SteerlabError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def _register_builtins() -> None:
    from steerlab.extraction.methods.actadd import ActAdd
    from steerlab.extraction.methods.mean_diff import MeanDiff
    from steerlab.extraction.methods.pca import PCA
    from steerlab.extraction.methods.probe import Probe

    register_method(Method("mean_diff", MeanDiff, description="CAA mean of paired differences"))
    register_method(Method("pca", PCA, description="RepE first principal component"))
    register_method(Method("probe", Probe, description="logistic-regression direction"))
    register_method(Method("actadd", ActAdd, read="all", default_site="block_input",
                           description="ActAdd position-resolved pair difference"))


_register_builtins()
