"""Audio discriminators and losses against descript-audio-codec's code (random-weight parity).

``import dac`` needs descript's ``audiotools``, which is not installable beside our stack: the
fixture below puts a small stand-in into ``sys.modules`` for the time of this file's tests. Its
``AudioSignal.stft`` / ``mel_spectrogram`` follow audiotools' ``audio_signal.py`` line by line
(padding for ``match_stride``, scipy's window, ``torch.stft``, frames dropped, the mel filterbank of
librosa when it is installed, else torchaudio's Slaney filterbank, which equals librosa's to
~1e-6). Everything else (the discriminators, their preprocessing, the loss formulas) is dac's
own code.
"""

from __future__ import annotations

import math
import sys
import types
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo.models.layers.audio_losses import (
    GANLoss,
    MelSpectrogramLoss,
    MultiScaleSTFTLoss,
    dac_mel_loss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from zoo.models.layers.discriminators import (
    DACDiscriminator,
    MultiBandSTFTDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    build_discriminator,
)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _audiotools_stub() -> dict[str, types.ModuleType]:
    STFTParams = namedtuple("STFTParams", ["window_length", "hop_length", "window_type", "match_stride", "padding_type"])
    STFTParams.__new__.__defaults__ = (None,) * 5

    def mel_basis(sr, n_fft, n_mels, fmin, fmax):
        try:
            from librosa.filters import mel

            return torch.from_numpy(mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))
        except ImportError:
            import torchaudio

            return torchaudio.functional.melscale_fbanks(
                n_fft // 2 + 1, float(fmin), float(fmax if fmax is not None else sr // 2), n_mels, sr,
                norm="slaney", mel_scale="slaney").T

    class AudioSignal:
        def __init__(self, audio_data, sample_rate, stft_params=None):
            self.audio_data, self.sample_rate = audio_data, sample_rate
            sp = stft_params or STFTParams()
            win = sp.window_length or int(2 ** np.ceil(np.log2(0.032 * sample_rate)))
            self.stft_params = STFTParams(win, sp.hop_length or win // 4, sp.window_type or "hann",
                                          bool(sp.match_stride), sp.padding_type or "reflect")
            self.stft_data = None

        def clone(self):
            return AudioSignal(self.audio_data.clone(), self.sample_rate, self.stft_params)

        def detach(self):
            self.audio_data = self.audio_data.detach()
            return self

        def stft(self, window_length=None, hop_length=None, window_type=None, match_stride=None, padding_type=None):
            from scipy import signal

            p = self.stft_params
            window_length = p.window_length if window_length is None else int(window_length)
            hop_length = p.hop_length if hop_length is None else int(hop_length)
            window_type = p.window_type if window_type is None else window_type
            match_stride = p.match_stride if match_stride is None else match_stride
            padding_type = p.padding_type if padding_type is None else padding_type
            window = torch.from_numpy(signal.get_window(window_type, window_length)).float()
            x = self.audio_data
            n = x.shape[-1]
            if match_stride:
                right_pad, pad = math.ceil(n / hop_length) * hop_length - n, (window_length - hop_length) // 2
            else:
                right_pad, pad = 0, 0
            x = F.pad(x, (pad, pad + right_pad), padding_type)
            s = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=window_length, hop_length=hop_length, window=window,
                           return_complex=True, center=True)
            s = s.reshape(self.audio_data.shape[0], self.audio_data.shape[1], *s.shape[-2:])
            if match_stride:
                s = s[..., 2:-2]
            self.stft_data = s
            return s

        @property
        def magnitude(self):
            if self.stft_data is None:
                self.stft()
            return torch.abs(self.stft_data)

        def mel_spectrogram(self, n_mels=80, mel_fmin=0.0, mel_fmax=None, **kwargs):
            mag = torch.abs(self.stft(**kwargs))
            basis = mel_basis(self.sample_rate, 2 * (mag.shape[2] - 1), n_mels, mel_fmin, mel_fmax).float()
            return (mag.transpose(2, -1) @ basis.T).transpose(-1, 2)

    class BaseModel(nn.Module):
        INTERN: list = []
        EXTERN: list = []

    at = types.ModuleType("audiotools")
    ml = types.ModuleType("audiotools.ml")
    ml.BaseModel = BaseModel
    ml.Accelerator = object  # named at import by dac.utils, never used here
    core = types.ModuleType("audiotools.core")
    util = types.ModuleType("audiotools.core.util")
    core.util = util
    at.ml, at.core, at.AudioSignal, at.STFTParams = ml, core, AudioSignal, STFTParams
    return {"audiotools": at, "audiotools.ml": ml, "audiotools.core": core, "audiotools.core.util": util}


@pytest.fixture(scope="module")
def dac_pkg():
    """descript-audio-codec imported over the audiotools stand-in; sys.modules restored after."""
    pytest.importorskip("argbind")
    saved = {k: v for k, v in sys.modules.items() if k == "dac" or k.startswith(("dac.", "audiotools"))}
    for k in saved:
        del sys.modules[k]
    sys.modules.update(_audiotools_stub())
    try:
        import dac.model.discriminator as disc
        from dac.nn import loss

        yield types.SimpleNamespace(disc=disc, loss=loss, AudioSignal=sys.modules["audiotools"].AudioSignal)
    finally:
        for k in [k for k in sys.modules if k == "dac" or k.startswith(("dac.", "audiotools"))]:
            del sys.modules[k]
        sys.modules.update(saved)


def _speechlike(b: int = 2, n: int = 8000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    f0 = 120 + 40 * torch.rand(b, 1, 1, generator=g)
    x = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.3 * x * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t)) + 0.05 * torch.randn(b, 1, n, generator=g)).float()


def _seeded_state(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith("weight_g") else 0.0)).to(v.dtype)
            for k, v in module.state_dict().items()}


def _max_err(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    assert len(a) == len(b)
    worst = 0.0
    for da, db in zip(a, b):
        assert len(da) == len(db)
        for x, y in zip(da, db):
            assert x.shape == y.shape
            worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-6)))
    return worst


# ------------------------------------------------------------------------------- discriminators


def test_dac_discriminator_state_dict_and_outputs_match_dac(dac_pkg):
    theirs = dac_pkg.disc.Discriminator(sample_rate=16000, rates=[], periods=[2, 3, 5, 7, 11], fft_sizes=[2048, 1024, 512]).eval()
    ours = DACDiscriminator(sample_rate=16000).eval()
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert list(sd_t) == list(sd_o)
    assert all(sd_t[k].shape == sd_o[k].shape for k in sd_t)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [d.bands for d in ours.discriminators[5:]] == [d.bands for d in theirs.discriminators[5:]]
    sd = _seeded_state(theirs)
    theirs.load_state_dict(sd)
    ours.load_state_dict(sd)
    x = _speechlike(2, 4000)
    with torch.no_grad():
        ref, out = theirs(x), ours(x)
    assert len(out) == 5 + 3 and [len(f) for f in out] == [len(f) for f in ref] == [6] * 5 + [26] * 3
    assert _max_err(out, ref) < 1e-5
    # a length that is not a multiple of the hop / periods, and batch 1
    x = _speechlike(1, 3001, seed=1)
    with torch.no_grad():
        assert _max_err(ours(x), theirs(x)) < 1e-5


def test_dac_msd_layout_and_names(dac_pkg):
    """With ``rates`` DAC adds MSDs; names and shapes match, and at rate 1 (no resampling) the
    outputs too (rates > 1 resample with torchaudio here, julius in DAC)."""
    theirs = dac_pkg.disc.Discriminator(sample_rate=16000, rates=[1], periods=[2], fft_sizes=[512]).eval()
    ours = DACDiscriminator(sample_rate=16000, rates=(1,), periods=(2,), fft_sizes=(512,)).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    sd = _seeded_state(theirs, 3)
    theirs.load_state_dict(sd)
    ours.load_state_dict(sd)
    x = _speechlike(1, 4096)
    with torch.no_grad():
        ours_out = ours(x)
        theirs_pre = theirs.preprocess(x)
        ref = [theirs.discriminators[0](theirs_pre), theirs.discriminators[1].conv_post(
            _run_convs(theirs.discriminators[1].convs, theirs_pre)), theirs.discriminators[2](theirs_pre)]
    assert _max_err([ours_out[0]], [ref[0]]) < 1e-5
    assert float((ours_out[1][-1] - ref[1]).abs().max()) < 1e-5 * float(ref[1].abs().max())
    assert _max_err([ours_out[2]], [ref[2]]) < 1e-5
    ours2 = MultiScaleDiscriminator(rates=(1, 2), sample_rate=16000)
    assert [f[-1].shape[-1] for f in ours2(x)] == [4096 // 256, 2048 // 256]


def _run_convs(convs, x):
    for c in convs:
        x = c(x)
    return x


def test_period_discriminator_hifigan_layout():
    """HiFi-GAN's layout (``convs.i.weight_g``, pad only when needed) computes what DAC's does
    when the length is not a multiple of the period."""
    dac_style = PeriodDiscriminator(3)
    hifi = PeriodDiscriminator(3, always_pad=False, sequential=False)
    assert "convs.0.0.weight_g" in dac_style.state_dict() and "convs.0.weight_g" in hifi.state_dict()
    hifi.load_state_dict({k.replace(".0.weight", ".weight").replace(".0.bias", ".bias") if k.startswith("convs") else k: v
                          for k, v in dac_style.state_dict().items()})
    x = _speechlike(1, 3001)
    with torch.no_grad():
        assert _max_err([hifi(x)], [dac_style(x)]) == 0.0
        # T % period == 0: HiFi-GAN does not pad, DAC adds a whole period (reflected)
        x = _speechlike(1, 3000)
        assert _max_err([hifi(F.pad(x, (0, 3), mode="reflect"))], [dac_style(x)]) == 0.0
    mpd = MultiPeriodDiscriminator()
    # HiFi-GAN V1's MPD has 41.1M parameters (5 x 8.2M), counted here from the layer sizes
    per = sum(i * o * 5 + o + o for i, o in zip((1, 32, 128, 512, 1024), (32, 128, 512, 1024, 1024))) + 1024 * 3 + 1 + 1
    assert sum(p.numel() for p in mpd.parameters()) == 5 * per


def test_hifigan_msd_and_encodec_msstftd():
    msd = build_discriminator("hifigan")
    x = _speechlike(1, 4000)
    out = msd(x)
    assert len(out) == 5 + 3 and all(len(f) == 8 for f in out[5:])
    assert "discriminators.1.discriminators.0.convs.0.weight_orig" in msd.state_dict()  # spectral norm, first scale
    assert "discriminators.1.discriminators.1.convs.0.weight_g" in msd.state_dict()
    assert [f[-1].shape[-1] for f in out[5:]] == [4000 // 64 + 1, 2001 // 64 + 1, 1001 // 64 + 1]

    d = MultiScaleSTFTDiscriminator(filters=32)
    sd = d.state_dict()
    # audiocraft's names: plain first conv, weight-normed others, the torchaudio window buffer
    assert "discriminators.0.convs.0.conv.weight" in sd and "discriminators.0.convs.1.conv.weight_g" in sd
    assert "discriminators.0.conv_post.conv.weight_v" in sd and "discriminators.0.spec_transform.window" in sd
    # parameters from audiocraft's layer sizes: conv 2->32 (3x9), three 32->32 (3x9), 32->32 (3x3), 32->1 (3x3);
    # weight norm adds one g per output channel
    per = (2 * 32 * 27 + 32) + 3 * (32 * 32 * 27 + 32 + 32) + (32 * 32 * 9 + 32 + 32) + (32 * 9 + 1 + 1)
    assert sum(p.numel() for p in d.parameters()) == 5 * per
    out = d(x)
    assert len(out) == 5 and all(len(f) == 6 for f in out)
    # the first scale sees torchaudio's normalised STFT (center=False), time x frequency
    spec = torch.stft(x[:, 0], 1024, 256, window=torch.hann_window(1024), center=False, return_complex=True)
    spec = spec / torch.hann_window(1024).pow(2).sum().sqrt()
    z = torch.cat([spec.real, spec.imag], 0)[None].transpose(-1, -2)
    ref = F.leaky_relu(d.discriminators[0].convs[0](z), 0.2)
    torch.testing.assert_close(out[0][0], ref, rtol=1e-5, atol=1e-6)


def test_discriminators_backward_and_bad_kind():
    for kind in ("dac", "encodec"):
        d = build_discriminator(kind, sample_rate=16000)
        x = _speechlike(1, 4000).requires_grad_(True)
        loss = generator_loss(d(x))
        loss.backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="kind must be"):
        build_discriminator("stylegan")
    with pytest.raises(ValueError, match="hop = window_length // 4"):
        MultiBandSTFTDiscriminator(512, hop_factor=0.5)


# ------------------------------------------------------------------------------------- losses


def test_mel_loss_matches_dac(dac_pkg):
    """DAC's training mel loss (conf/base.yml) against ours with torchaudio transforms."""
    AudioSignal = dac_pkg.AudioSignal
    theirs = dac_pkg.loss.MelSpectrogramLoss(
        n_mels=[5, 10, 20, 40, 80, 160, 320], window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
        mel_fmin=[0.0] * 7, mel_fmax=[None] * 7, pow=1.0, clamp_eps=1e-5, mag_weight=0.0)
    ours = dac_mel_loss(16000)
    x, y = _speechlike(2, 8000, 0), _speechlike(2, 8000, 1)
    ref = theirs(AudioSignal(x, 16000), AudioSignal(y, 16000))
    val = ours(x, y)
    assert abs(float(val) - float(ref)) < 1e-5 * float(ref), (float(val), float(ref))
    assert float(ours(x, x)) == 0.0
    # the default (two scales, log + magnitude, pow 2) at 24 kHz, with band limits
    theirs = dac_pkg.loss.MelSpectrogramLoss(mel_fmin=[50.0, 0.0], mel_fmax=[8000.0, None])
    ours = MelSpectrogramLoss(24000, mel_fmin=[50.0, 0.0], mel_fmax=[8000.0, None])
    ref = theirs(AudioSignal(x, 24000), AudioSignal(y, 24000))
    assert abs(float(ours(x, y)) - float(ref)) < 1e-5 * float(ref)
    assert ours.state_dict() == {} and dac_mel_loss(16000).state_dict() == {}


def test_stft_loss_matches_dac(dac_pkg):
    AudioSignal = dac_pkg.AudioSignal
    theirs = dac_pkg.loss.MultiScaleSTFTLoss()
    ours = MultiScaleSTFTLoss()
    x, y = _speechlike(2, 8000, 0), _speechlike(2, 8000, 2)
    ref = theirs(AudioSignal(x, 16000), AudioSignal(y, 16000))
    assert abs(float(ours(x, y)) - float(ref)) < 1e-5 * float(ref)
    with pytest.raises(ValueError, match="differ in shape"):
        ours(x, y[..., :-1])


def test_gan_losses_match_dac(dac_pkg):
    AudioSignal = dac_pkg.AudioSignal
    theirs_d = dac_pkg.disc.Discriminator(sample_rate=16000, periods=[2, 3], fft_sizes=[512, 256])
    ours_d = DACDiscriminator(sample_rate=16000, periods=(2, 3), fft_sizes=(512, 256))
    sd = _seeded_state(theirs_d, 5)
    theirs_d.load_state_dict(sd)
    ours_d.load_state_dict(sd)
    theirs, ours = dac_pkg.loss.GANLoss(theirs_d), GANLoss(ours_d)
    fake, real = _speechlike(2, 4000, 3), _speechlike(2, 4000, 4)
    ref_d = theirs.discriminator_loss(AudioSignal(fake, 16000), AudioSignal(real, 16000))
    ref_g, ref_f = theirs.generator_loss(AudioSignal(fake, 16000), AudioSignal(real, 16000))
    val_d = ours.discriminator_loss(fake, real)
    val_g, val_f = ours.generator_loss(fake, real)
    for a, b in ((val_d, ref_d), (val_g, ref_g), (val_f, ref_f)):
        assert abs(float(a.detach()) - float(b.detach())) < 1e-5 * abs(float(b.detach())), (float(a.detach()), float(b.detach()))


def test_adversarial_formulas():
    real = [[torch.tensor([2.0]), torch.tensor([0.5, 1.5])], [torch.tensor([2.0, -1.0])]]
    fake = [[torch.ones(1), torch.tensor([-0.5, 0.5])], [torch.tensor([0.0, 3.0])]]
    # lsgan: sum_k mean(D(fake)^2) + mean((1 - D(real))^2)
    assert float(discriminator_loss(fake, real)) == pytest.approx((0.25 + 0.25) / 2 + 0.25 + (0 + 9) / 2 + (1 + 4) / 2)
    assert float(generator_loss(fake)) == pytest.approx((2.25 + 0.25) / 2 + (1 + 4) / 2)
    # hinge: mean(relu(1 - real)) + mean(relu(1 + fake)); generator -mean(fake); "mean" averages
    assert float(discriminator_loss(fake, real, "hinge")) == pytest.approx((0.5 + 0) / 2 + (0.5 + 1.5) / 2 + (0 + 2) / 2 + (1 + 4) / 2)
    assert float(generator_loss(fake, "hinge", "mean")) == pytest.approx((0.0 + -1.5) / 2)
    # feature matching: L1 of all maps but the logits
    assert float(feature_matching_loss(fake, real)) == pytest.approx(1.0)  # |1 - 2|; the logits are not matched
    assert float(feature_matching_loss(fake, real, normalize=True)) == pytest.approx(0.5)  # / mean|real|
    with pytest.raises(ValueError, match="lsgan"):
        generator_loss(fake, "wasserstein")
