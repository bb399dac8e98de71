"""The ``strength`` calibration: the mean residual-stream norm at a vector's site and layers.

``strength=s`` means "add a vector whose norm is s × the mean residual norm at that layer", so
it transfers across layers and models. Extraction measures the norm on its own data; this
measures it on any texts, for vectors built by hand or imported.

Example:
    >>> calibrate(vec, lm, ["Some ordinary text.", "More text."])   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError
from steerlab.extraction.record import record
from steerlab.model.load import as_loaded
from steerlab.vector import SteeringVector


def calibrate(vector: SteeringVector, model: Any, texts: list[str] | str, *,
              tokenizer: Any = None, batch_size: int = 16) -> SteeringVector:
    """Measure the mean residual norm at ``vector``'s site and layers on ``texts``.

    Stores it as the ``resid_norms`` calibration used by
    :meth:`SteeringVector.coefficient_for_strength` (mean L2 norm over tokens, each text's first
    token excluded, as at extraction). Updates the vector in place and returns it.
    """
    lm = as_loaded(model, tokenizer)
    if lm.tokenizer is None:
        raise SteerlabError("calibrate needs a tokenizer: pass a LoadedModel or tokenizer=")
    vector.check_model(lm)
    if isinstance(texts, str):
        texts = [texts]
    sequences = [list(lm.tokenizer(t)["input_ids"]) for t in texts if t]
    if not sequences:
        raise SteerlabError("calibrate needs at least one non-empty text")
    sums = dict.fromkeys(vector.layers, 0.0)
    count = 0
    for batch in record(lm.model, sequences, vector.layers, site=vector.site,
                        batch_size=max(1, batch_size), pad_id=lm.pad_id):
        count += batch.norm_count
        for k in vector.layers:
            sums[k] += batch.norm_sum[k]
    if count == 0:
        raise SteerlabError("calibrate needs texts of at least 2 tokens")
    vector.manifest["resid_norms"] = {str(k): sums[k] / count for k in vector.layers}
    return vector
