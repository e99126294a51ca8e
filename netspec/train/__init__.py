"""The runtime: data, augmentation, optimisers, schedules, the loop, evaluation, checkpoints."""
