"""Evaluation of a finished run's checkpoint on the validation set (`--mode=eval`). Which
checkpoint it reads, the best one by `config.checkpoint`'s metric, and how unreadable ones are
passed over, is `cnnjax.checkpoint`'s (`Checkpoints.restore_best`)."""
