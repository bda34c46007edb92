"""Promptable segmentation task (Mobile SAM / SAM): predictor, automatic masks, ONNX decoder export, CLI, training and eval."""
