"""Placeholder for `steerlab eval` (being written)."""


def command() -> None:
    """Not written yet."""
    raise NotImplementedError
