"""Super-resolution task.

- :mod:`.metrics`: PSNR-Y / SSIM-Y as the field computes them (MATLAB BT.601 Y, border crop,
  uint8-rounded output).
- :mod:`.data`: ``SRTrainDataset`` (random HR patches, LR by PIL bicubic), ``SRPairedDataset``
  (``HR/x{s}`` + ``LR/x{s}`` benchmark folders), ``SRDataModule``.
- :mod:`.module`: ``SRModule`` (L1, Adam, step / cosine schedule, PSNR-Y / SSIM-Y validation).
- :mod:`.evaluate`: ``evaluate_sr`` and tiled inference (``upscale_tiled``).

Nothing is imported here, so ``import zoo.tasks.sr`` does not pull in Lightning.
"""
