"""Ship a steering vector out of Python: llama.cpp control vector GGUFs and a llama.cpp runner.

:mod:`steerlab.export.gguf` writes and reads the files with gguf-py alone;
:mod:`steerlab.export.llamacpp` (optional extra ``steerlab[llamacpp]``: llama-cpp-python) runs
them in real llama.cpp.

Example:
    >>> from steerlab.export import to_gguf, from_gguf
    >>> out = to_gguf(vec, "syc.gguf", layers=[10], strength=0.3)        # doctest: +SKIP
    >>> out.llama_args()                                                 # doctest: +SKIP
    ['--control-vector', 'syc.gguf']
"""

from steerlab.export.gguf import (
    GGUFExport,
    control_directions,
    from_gguf,
    read_control_vector,
    to_gguf,
)

__all__ = ["GGUFExport", "control_directions", "from_gguf", "read_control_vector", "to_gguf"]
