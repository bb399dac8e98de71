"""One module per study; each a config dataclass and a ``run(config)`` (plain Python)."""
