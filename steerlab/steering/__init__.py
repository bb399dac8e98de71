"""Applying steering vectors: specs, compiled terms and positions, hooks, conditional gates."""
