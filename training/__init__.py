"""semnorm.training: the training loop, datasets and metrics (see the project issues)."""
