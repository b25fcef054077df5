"""Training: train state, optimizers, the jitted update step, sharding, checkpoints, loop."""
