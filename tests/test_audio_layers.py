"""Shared audio-codec blocks (models/layers/audio.py): weight norm as torch's hook computes it,
EnCodec's streamable convolutions and SEANet against the ``encodec`` package, Snake, the
Vocos-style iSTFT head."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from zoo.models.layers.audio import (
    ISTFT,
    AdaLayerNorm,
    ConvNeXtBlock1d,
    DACDecoder,
    DACEncoder,
    ISTFTHead,
    SConv1d,
    SConvTranspose1d,
    SEANetDecoder,
    SEANetEncoder,
    Snake1d,
    VocosBackbone,
    WNConv1d,
    WNConvTranspose1d,
    pad1d,
    snake,
    unpad1d,
)

encodec_modules = pytest.importorskip("encodec.modules")


def _randomise(module: nn.Module, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            sd[k] = 0.5 + torch.rand(v.shape, generator=g) if k.endswith("weight_g") else 0.3 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = v
    return sd


# ------------------------------------------------------------------------------ weight norm


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_norm_matches_torch_hook(transposed):
    kw = dict(stride=2, padding=1)
    ours = (WNConvTranspose1d if transposed else WNConv1d)(6, 4, 4, **kw)
    ref = torch.nn.utils.weight_norm((nn.ConvTranspose1d if transposed else nn.Conv1d)(6, 4, 4, **kw))
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["bias", "weight_g", "weight_v"]
    sd = _randomise(ref)
    ref.load_state_dict(sd)
    ours.load_state_dict(sd)
    x = torch.randn(2, 6, 13)
    assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours.weight, ref.weight)
    # gradients reach magnitude and direction; the module deep-copies and runs on meta
    ours(x).square().sum().backward()
    assert ours.weight_g.grad.abs().sum() > 0 and ours.weight_v.grad.abs().sum() > 0
    meta = copy.deepcopy(ours).to("meta")
    assert meta(torch.empty(2, 6, 13, device="meta")).shape == ref(x).shape
    assert isinstance(ours, nn.ConvTranspose1d if transposed else nn.Conv1d)


def test_snake_formula():
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    m = Snake1d(3).double()
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([0.5, 1.0, 2.5]).view(1, 3, 1))
    a = m.alpha
    expected = x + torch.sin(a * x) ** 2 / (a + 1e-9)
    torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)
    # any trailing shape (B, C, ...) works
    x4 = torch.randn(2, 3, 4, 5)
    assert torch.allclose(snake(x4, m.alpha.float()), snake(x4.flatten(2), m.alpha.float()).view_as(x4))


# ------------------------------------------------------------------------------ EnCodec blocks


def test_pad1d_and_unpad1d_match_encodec():
    from encodec.modules.conv import pad1d as ref_pad1d
    from encodec.modules.conv import unpad1d as ref_unpad1d

    for length in (2, 5, 9):
        x = torch.randn(1, 2, length)
        for pads in ((3, 1), (0, 6), (4, 4)):
            assert torch.equal(pad1d(x, pads, "reflect"), ref_pad1d(x, pads, "reflect"))
            assert torch.equal(pad1d(x, pads, "zeros"), ref_pad1d(x, pads, "constant"))
    y = torch.randn(1, 2, 10)
    assert torch.equal(unpad1d(y, (3, 2)), ref_unpad1d(y, (3, 2)))
    with pytest.raises(ValueError):
        unpad1d(y, (6, 5))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm", ["weight_norm", "time_group_norm", "none"])
def test_streamable_convs_match_encodec(causal, norm):
    if causal and norm == "time_group_norm":
        with pytest.raises(ValueError, match="causal"):
            SConv1d(3, 5, 7, causal=True, norm=norm)
        return
    for k, s, d in ((7, 1, 1), (4, 2, 1), (3, 1, 3), (10, 5, 1)):
        ours = SConv1d(3, 5, k, stride=s, dilation=d, causal=causal, norm=norm)
        ref = encodec_modules.SConv1d(3, 5, k, stride=s, dilation=d, causal=causal, norm=norm)
        assert list(ours.state_dict()) == list(ref.state_dict())
        sd = _randomise(ref)
        ours.load_state_dict(sd), ref.load_state_dict(sd)
        for length in (17, 40):
            x = torch.randn(2, 3, length)
            assert torch.equal(ours(x), ref(x)), (k, s, d, length)
    for k, s in ((4, 2), (10, 5), (16, 8)):
        ours_t = SConvTranspose1d(5, 3, k, stride=s, causal=causal, norm=norm)
        ref_t = encodec_modules.SConvTranspose1d(5, 3, k, stride=s, causal=causal, norm=norm)
        assert list(ours_t.state_dict()) == list(ref_t.state_dict())
        sd = _randomise(ref_t)
        ours_t.load_state_dict(sd), ref_t.load_state_dict(sd)
        x = torch.randn(2, 5, 9)
        y = ours_t(x)
        assert torch.equal(y, ref_t(x)) and y.shape[-1] == 9 * s


@pytest.mark.parametrize("causal", [False, True])
def test_seanet_matches_encodec(causal):
    cfg = dict(channels=1, dimension=16, n_filters=4, ratios=[4, 2], causal=causal, lstm=2, true_skip=False)
    enc, ref_enc = SEANetEncoder(**cfg), encodec_modules.SEANetEncoder(**cfg)
    dec, ref_dec = SEANetDecoder(**cfg, final_activation="Tanh"), encodec_modules.SEANetDecoder(
        **cfg, final_activation="Tanh")
    for ours, ref in ((enc, ref_enc), (dec, ref_dec)):
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        assert list(ours.state_dict()) == list(ref.state_dict())
        sd = _randomise(ref, seed=3)
        ours.load_state_dict(sd), ref.load_state_dict(sd)
    x = torch.rand(2, 1, 200) * 2 - 1
    with torch.no_grad():
        z, z_ref = enc(x), ref_enc(x)
        assert z.shape == (2, 16, 25)
        torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-6)
        y, y_ref = dec(z_ref), ref_dec(z_ref)
    assert y.shape == x.shape
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    assert enc.hop_length == dec.hop_length == 8


def test_seanet_causal_output_ignores_the_future():
    enc = SEANetEncoder(dimension=8, n_filters=4, ratios=[2, 2], causal=True, lstm=0).eval()
    x = torch.randn(1, 1, 64)
    x2 = x.clone()
    x2[..., 40:] = torch.randn(24)
    with torch.no_grad():
        a, b = enc(x), enc(x2)
    assert torch.equal(a[..., :10], b[..., :10])  # frames ending before sample 40
    assert not torch.equal(a, b)


def test_snake_activation_in_seanet():
    enc = SEANetEncoder(dimension=8, n_filters=4, ratios=[2], activation="Snake", lstm=0)
    assert any(isinstance(m, Snake1d) for m in enc.modules())
    assert enc(torch.randn(1, 1, 32)).shape == (1, 8, 16)


# ------------------------------------------------------------------------------ DAC blocks


def test_dac_encoder_decoder_lengths_and_channels():
    enc = DACEncoder(4, (2, 4, 5), 16, d_in=2)
    dec = DACDecoder(16, 32, (5, 4, 2), d_out=2)
    x = torch.randn(1, 2, 400)
    z = enc(x)
    assert z.shape == (1, 16, 10)
    y = dec(z)
    # the authors' odd-stride transposed conv (k=10, s=5, p=3) gives 5T - 1 samples, not 5T
    assert y.shape == (1, 2, (10 * 5 - 1) * 4 * 2) and y.abs().max() <= 1


# ------------------------------------------------------------------------------ Fourier head


def _stft_same(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    # Vocos's "same" analysis: reflect-pad (win - hop) / 2 on both sides, no centring
    pad = (n_fft - hop) // 2
    xp = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    return torch.stft(xp, n_fft, hop, n_fft, window, center=False, return_complex=True)


def test_istft_same_padding_inverts_stft():
    n_fft, hop = 64, 16
    istft = ISTFT(n_fft, hop, padding="same").double()
    x = torch.randn(2, 40 * hop, dtype=torch.float64)
    spec = _stft_same(x, n_fft, hop, istft.window)
    assert spec.shape[-1] == 40
    y = istft(spec)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=0, atol=1e-10)


def test_istft_center_matches_torch():
    n_fft, hop = 64, 16
    x = torch.randn(2, 1000, dtype=torch.float64)
    istft = ISTFT(n_fft, hop, padding="center").double()
    spec = torch.stft(x, n_fft, hop, n_fft, istft.window, center=True, return_complex=True)
    y = istft(spec)
    torch.testing.assert_close(y, x[:, : y.shape[-1]], rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="padding"):
        ISTFT(n_fft, hop, padding="valid")


def test_istft_head_and_vocos_backbone():
    head = ISTFTHead(dim=24, n_fft=64, hop_length=16)
    assert set(head.state_dict()) == {"out.weight", "out.bias", "istft.window"}
    h = torch.randn(2, 12, 24)
    with torch.no_grad():
        y = head(h)
        # the head is exp(log-magnitude) * e^{i phase} through the iSTFT
        o = head.out(h).transpose(1, 2)
        mag, ph = o.chunk(2, 1)
        ref = head.istft(torch.polar(torch.exp(mag).clip(max=1e2), ph))
    assert y.shape == (2, 12 * 16)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)

    bb = VocosBackbone(input_channels=8, dim=24, intermediate_dim=48, num_layers=2, adanorm_num_embeddings=4)
    x = torch.randn(2, 8, 12)
    out = bb(x, bandwidth_id=torch.tensor([1]))
    assert out.shape == (2, 12, 24)
    with pytest.raises(ValueError, match="bandwidth_id"):
        bb(x)
    # AdaLayerNorm starts as a plain LayerNorm (scale 1, shift 0)
    ada = AdaLayerNorm(3, 24)
    t = torch.randn(2, 5, 24)
    torch.testing.assert_close(ada(t, torch.tensor([2])), torch.nn.functional.layer_norm(t, (24,), eps=1e-6))
    blk = ConvNeXtBlock1d(24, 48, layer_scale_init_value=0.0)
    assert blk.gamma is None and blk(torch.randn(1, 24, 7)).shape == (1, 24, 7)
