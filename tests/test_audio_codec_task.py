"""The audio codec task: metrics with known values on real speech, audio folders (crops,
resampling, channels), GAN training that lowers the mel loss, and `zoo train audio_codec` /
`zoo eval audio_codec` through the command line. The codec is a narrow ``dac_16khz``."""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from conftest import need
from zoo.tasks.audio_codec import metrics
from zoo.tasks.audio_codec.data import AudioDataModule, AudioSegmentDataset, load_audio, match_channels
from zoo.tasks.base import TaskConfigError

import zoo

TINY = {"encoder_dim": 8, "decoder_dim": 64, "codebook_size": 64, "n_codebooks": 4}
SMALL_DISC = {"periods": [2, 3], "fft_sizes": [512, 256], "period_channels": [8, 16, 32, 32, 32], "band_channels": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids OpenMP's spinning on a shared, busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def speech(data_dir):
    return need(data_dir / "speech", "speech test clips")


def _read(path) -> torch.Tensor:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == 16000
    return torch.from_numpy(x.T.copy())


# --------------------------------------------------------------------------------- metrics


def test_si_sdr_known_values(speech):
    x = _read(speech / "p232_010_clean.wav")
    assert metrics.si_sdr(x, 0.5 * x) > 100  # scale-invariant: a scaled copy is (numerically) perfect
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    for snr in (0.0, 10.0, 20.0):
        n = noise * (x.pow(2).sum() / noise.pow(2).sum() / 10 ** (snr / 10)).sqrt()
        assert metrics.si_sdr(x, x + n) == pytest.approx(snr, abs=0.05)
        assert metrics.si_sdr(x, 3 * (x + n)) == pytest.approx(snr, abs=0.05)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.si_sdr(x, x[..., :-1])


def test_stoi_pesq_on_speech(speech):
    clean = _read(speech / "p232_010_clean.wav")
    noisy = _read(speech / "p232_010_noisy.wav")
    assert metrics.stoi(clean, clean, 16000) == pytest.approx(1.0, abs=1e-6)
    assert metrics.pesq_wb(clean, clean, 16000) == pytest.approx(4.64, abs=0.01)  # P.862.2's ceiling
    s, p = metrics.stoi(clean, noisy, 16000), metrics.pesq_wb(clean, noisy, 16000)
    assert 0.5 < s < 0.99 and 1.0 < p < 3.0, (s, p)  # VoiceBank-DEMAND noisy speech
    # other rates: PESQ resamples to 16 kHz first (the identity stays at the ceiling)
    c24 = torchaudio.functional.resample(clean, 2, 3)
    assert metrics.pesq_wb(c24, c24, 24000) == pytest.approx(4.64, abs=0.01)
    assert metrics.pesq_wb(torch.zeros(1, 16000), torch.zeros(1, 16000), 16000) is None  # no speech to score


def test_distances_and_bitrates(speech):
    clean = _read(speech / "p232_010_clean.wav")
    noisy = _read(speech / "p232_010_noisy.wav")
    assert metrics.mel_distance(clean, clean, 16000) == 0.0 and metrics.stft_distance(clean, clean) == 0.0
    assert 0 < metrics.mel_distance(clean, noisy, 16000) < metrics.mel_distance(clean, torch.zeros_like(clean), 16000)
    assert metrics.stft_distance(clean, noisy) > 0
    # DAC 16 kHz: 12 codebooks of 1024 at 50 Hz = 6 kbps (the paper's number); 8 codebooks of 1024 at
    # 75 Hz = 6 kbps for EnCodec 24 kHz
    assert metrics.nominal_bitrate(12, 1024, 16000, 320) == pytest.approx(6.0)
    assert metrics.nominal_bitrate(8, 1024, 24000, 320) == pytest.approx(6.0)
    assert metrics.code_bitrate(12, 50, 1024, 1.0) == pytest.approx(6.0)
    assert metrics.code_bitrate(12, 50, 1024, 0.99) == pytest.approx(6.0 / 0.99)  # a started frame costs a whole one
    assert metrics.code_bitrate(2, 10, 1000, 1.0) == pytest.approx(2 * 10 * 10 / 1000)  # ceil(log2(1000)) = 10 bits
    m = zoo.create("dac_16khz", **TINY)
    assert metrics.nominal_bitrate(4, 64, 16000, 320) == pytest.approx(m.bitrates[-1])


# ------------------------------------------------------------------------------------ data


def test_audio_folder_crops_resampling_channels(tmp_path):
    rng = np.random.default_rng(0)
    stereo24 = (0.1 * rng.standard_normal((24000, 2))).astype(np.float32)  # 1 s, 24 kHz, stereo
    mono16 = (0.1 * rng.standard_normal(4000)).astype(np.float32)  # 0.25 s, 16 kHz
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.flac", stereo24, 24000)
    sf.write(tmp_path / "sub" / "b.wav", mono16, 16000)
    (tmp_path / "notes.txt").write_text("not audio")

    ds = AudioSegmentDataset(tmp_path, 16000, 1, segment_seconds=0.5, train=True, repeat=3)
    assert [p.name for p in ds.files] == ["a.flac", "b.wav"] and len(ds) == 6
    assert all(ds[i].shape == (1, 8000) for i in range(6))
    # validation: the file's start; resampled 24 -> 16 kHz and mixed down like a direct computation
    val = AudioSegmentDataset(tmp_path, 16000, 1, segment_seconds=0.5, train=False)
    stored, _ = sf.read(tmp_path / "a.flac", dtype="float32")  # 16-bit FLAC: quantised, clipped
    direct = torchaudio.functional.resample(torch.from_numpy(stored.T.copy()).mean(0, keepdim=True), 3, 2)
    torch.testing.assert_close(load_audio(tmp_path / "a.flac", 16000, 1), direct)
    assert (val[0] - direct[:, :8000]).abs().max() < 2e-3  # the crop is resampled on its own (edge effects)
    # short files are zero-padded; mono files feed a 2-channel model by repetition
    b = AudioSegmentDataset(tmp_path / "sub", 16000, 2, segment_seconds=0.5, train=False)[0]
    assert b.shape == (2, 8000) and torch.equal(b[0], b[1]) and b[:, 4000:].abs().max() == 0
    torch.testing.assert_close(b[0, :4000], torch.from_numpy(mono16), rtol=0, atol=1 / 32768)  # 16-bit wav
    with pytest.raises(ValueError, match="2 channels; the model takes 3"):
        match_channels(torch.zeros(2, 10), 3, "x")
    # volume normalisation to an RMS level in dBFS
    lv = AudioSegmentDataset(tmp_path, 16000, 1, segment_seconds=0.5, train=False, volume_norm_db=-20.0)[0]
    assert 10 * math.log10(float(lv.double().pow(2).mean())) == pytest.approx(-20.0, abs=1e-3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskConfigError, match="no audio files"):
        AudioSegmentDataset(tmp_path / "empty", 16000)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioDataModule(str(tmp_path / "nope"))


# -------------------------------------------------------------------------------- training


def test_gan_training_lowers_the_mel_loss(speech):
    from zoo.tasks.audio_codec.module import AudioCodecModule

    L.seed_everything(0)
    module = AudioCodecModule("dac_16khz", model_args=TINY, disc_args=SMALL_DISC, lr=1e-3)
    assert not any("mel_loss" in k or "stft_loss" in k for k in module.state_dict())
    assert any(k.startswith("disc.discriminators.2.band_convs") for k in module.state_dict())
    val = AudioSegmentDataset(speech, 16000, 1, segment_seconds=1.0, train=False)
    fixed = torch.stack([val[i] for i in range(0, len(val), 4)])

    def mel_now() -> float:
        module.eval()
        with torch.no_grad():
            y = module.net(fixed)
            return float(module.mel_loss(y, fixed[..., : y.shape[-1]]))

    before = mel_now()
    disc_before = {k: v.clone() for k, v in module.disc.state_dict().items()}
    module.train()
    dm = AudioDataModule(str(speech), None, 16000, 1, 0.38, batch_size=4, num_workers=0, repeat=4)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    after = mel_now()
    assert trainer.global_step == 8  # generator steps; the discriminator's do not count
    assert after < 0.9 * before, (before, after)
    logged = trainer.callback_metrics
    for key in ("train/mel", "train/adversarial", "train/feature", "train/commitment", "train/codebook", "train/disc_loss"):
        assert key in logged and torch.isfinite(logged[key]), key
    total = 15 * logged["train/mel"] + 2 * logged["train/feature"] + logged["train/adversarial"] \
        + 0.25 * logged["train/commitment"] + logged["train/codebook"]
    torch.testing.assert_close(logged["train/loss"], total)  # DAC's weights
    assert not all(torch.equal(v, module.disc.state_dict()[k]) for k, v in disc_before.items())
    opt_g = trainer.optimizers[0]
    assert opt_g.param_groups[0]["betas"] == (0.8, 0.99)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.999996**8)


def test_module_configuration_errors(tmp_path, speech):
    from zoo.tasks.audio_codec.module import AudioCodecModule

    with pytest.raises(TaskConfigError, match="not an audio codec"):
        AudioCodecModule("rlfn_x4")
    with pytest.raises(TaskConfigError, match="adversarial_weight: 0"):
        AudioCodecModule("dac_16khz", model_args=TINY, discriminator="none")
    with pytest.raises(TaskConfigError, match="discriminator 'dac'"):
        AudioCodecModule("dac_16khz", model_args=TINY, disc_args={"periodz": [2]})
    module = AudioCodecModule("dac_16khz", model_args=TINY, discriminator="none", adversarial_weight=0, feature_weight=0)
    dm = AudioDataModule(str(speech), None, 24000, 1, 0.1, batch_size=2, num_workers=0)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(TaskConfigError, match="data.sample_rate is 24000 but model 'dac_16khz' has sample_rate 16000"):
        trainer.fit(module, dm)


def test_encodec_generator_with_msstft_discriminator():
    from zoo.tasks.audio_codec.module import AudioCodecModule

    if "encodec_24khz" not in zoo.list_models(task="audio_codec"):
        pytest.skip("encodec_24khz is not registered in this checkout")
    from zoo.registry import get_entry

    module = AudioCodecModule("encodec_24khz", model_args=get_entry("encodec_24khz").test_args, discriminator="encodec",
                              disc_args={"filters": 8, "n_ffts": [256, 128], "hop_lengths": [64, 32], "win_lengths": [256, 128]},
                              adversarial_loss="hinge", adversarial_reduction="mean", normalize_features=True)
    x = 0.1 * torch.randn(2, 1, 4800)
    module.train()
    loss, terms = module.generator_losses(x, module.net.forward_train(x))
    assert set(terms) == {"mel", "adversarial", "feature", "commitment", "codebook"}
    expected = 15 * terms["mel"] + 2 * terms["feature"] + terms["adversarial"] + 0.25 * terms["commitment"] + terms["codebook"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())


# ------------------------------------------------------------------------------ CLI + eval


def test_train_cli_checkpoint_then_eval_cli(speech, tmp_path, capsys):
    from zoo.tasks.cli import train_main

    from zoo.cli import main as zoo_main

    rc = train_main("audio_codec", [
        "-c", "audio_codec/dac_16khz.yaml", f"--model.model_args={json.dumps(TINY)}",
        f"--model.disc_args={json.dumps(SMALL_DISC)}", f"--data.train_dir={speech}", f"--data.val_dir={speech}",
        "--data.batch_size=2", "--data.num_workers=0", "--data.segment_seconds=0.2", "--data.val_segment_seconds=0.5",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2",
        "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.callbacks=null",
    ])
    assert rc == 0
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert any(k.startswith("disc.") for k in ckpt["state_dict"]) and any(k.startswith("net.") for k in ckpt["state_dict"])
    assert ckpt["zoo_data_cfg"] == {"sample_rate": 16000, "channels": 1}
    capsys.readouterr()

    rc = zoo_main(["eval", "audio_codec", "--model", "dac_16khz", "--checkpoint", str(ckpts[-1]), "--data", str(speech),
                   "--max-files", "2", "--max-seconds", "1.5", "--bitrate", "0.6", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["files"] == 2 and res["n_q"] == 2  # 2 codebooks of 64 (6 bits) at 50 Hz = 0.6 kbps
    assert res["nominal_kbps"] == pytest.approx(0.6)
    for key in ("bitrate_kbps", "file_kbps", "mel_distance", "stft_distance", "si_sdr", "stoi", "pesq"):
        assert res[key] is not None and np.isfinite(res[key]), key
    row = res["per_file"][0]
    assert row["bitrate_kbps"] == pytest.approx(2 * 75 * 6 / 1.5 / 1000)  # ceil(1.5 s / 20 ms) = 75 frames of 2 x 6 bits
    assert row["file_kbps"] > row["bitrate_kbps"]  # the header costs a little
    assert 0 <= row["stoi"] <= 1 and 1.0 <= row["pesq"] <= 4.64
    # the numbers are those of a direct computation on the decompressed audio
    from zoo.tasks.cli import load_eval_model

    m = load_eval_model("dac_16khz", str(ckpts[-1])).eval()
    x = load_audio(speech / row["file"], 16000, 1, 1.5)
    with torch.no_grad():
        y = m.decompress(m.compress(x[None], n_quantizers=2))[0].clamp(-1, 1)
    assert row["mel_distance"] == pytest.approx(metrics.mel_distance(x, y, 16000), rel=1e-6)
    assert row["si_sdr"] == pytest.approx(metrics.si_sdr(x, y), rel=1e-6)
    assert row["pesq"] == pytest.approx(metrics.pesq_wb(x, y, 16000), rel=1e-6)

    assert zoo_main(["eval", "audio_codec", "--model", "dac_16khz", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
