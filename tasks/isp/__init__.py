"""Learned smartphone ISP task: packed Bayer RAW -> sRGB.

- :mod:`.unprocess`: Brooks et al.'s RAW simulator (sRGB -> RAW with random camera metadata and
  noise) and the forward pipeline from known metadata.
- :mod:`.data`: ``SimulatedISPDataset`` (any sRGB folder -> RAW/RGB pairs), ``ZurichDataset``
  (Zurich RAW-to-RGB folders as they are), ``UnpairedDataset``, ``ISPDataModule``.
- :mod:`.module`: ``ISPModule`` (paired L1 baseline; the unpaired recipe of Arhire & Timofte
  2025 with several discriminators on pretrained-network features, manual G/D optimisation).
- :mod:`.evaluate`: ``evaluate_isp`` (PSNR, SSIM on RGB).

Nothing is imported here, so ``import zoo.tasks.isp`` does not pull in Lightning.
"""
