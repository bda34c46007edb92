"""Neural audio codec task (issue #7).

- :mod:`.data`: audio folders (soundfile, torchaudio resampling), random training crops,
  ``AudioDataModule``.
- :mod:`.module`: ``AudioCodecModule``: generator / discriminator GAN training with DAC's recipe.
- :mod:`.metrics`: exact bitrate, mel / STFT distances, SI-SDR, STOI, wideband PESQ.
- :mod:`.evaluate`: ``evaluate_audio_codec`` for ``zoo eval audio_codec``, through the real bitstream.

Nothing is imported here, so ``import zoo.tasks.audio_codec`` does not pull in Lightning.
"""
