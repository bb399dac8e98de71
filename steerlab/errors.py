"""User-facing errors: one line that names the problem, raised instead of tracebacks.

Example:
    >>> raise SteerlabError("data.json: item 3: field 'question': expected str, got int")
    Traceback (most recent call last):
    ...
    steerlab.errors.SteerlabError: data.json: item 3: field 'question': expected str, got int
"""

from __future__ import annotations


class SteerlabError(Exception):
    """A problem with the user's input or environment, reported as one clear line.

    The CLI prints ``error: <message>`` and exits with status 2; library users can catch it.
    """
