"""Pure train steps ``(state, batch, rng) -> (state, metrics)`` and their optimizer."""
