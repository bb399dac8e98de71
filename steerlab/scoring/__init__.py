"""Scoring under steering: the one batched steered forward, readouts, A/B and open-answer
scores, the generation loop, likelihoods, and the prefix-reusing sweep engine."""
