"""Tasks: one folder per task with its LightningModule, DataModule, metrics and CLI wiring."""
