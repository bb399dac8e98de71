"""A griffe extension for the documentation site (``mkdocs.yml``: mkdocstrings ``extensions``).

steerlab's docstrings say ``Example:`` (singular) above their doctests. Griffe's Google-style
parser only knows ``Examples:``, so the singular became plain Markdown text, where ``>>>`` lines
read as block quotes and doctest output such as ``[0.5]`` as a reference link. This extension
renames the section before the docstring is parsed, so the doctests render as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """``Example:`` → ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = _SINGULAR.sub(r"\1Examples:", docstring.value)
