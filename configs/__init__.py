"""YAML recipes per task and model (LightningCLI format), shipped with the package."""
