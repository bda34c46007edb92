"""WaLLoC: the wavelet packet transform against PyWavelets, random-weight parity with the authors'
``walloc`` package (transform, latents, reconstructions, their file layout, their WebP latent
bytes), exact parameter counts of their published configs, the .zic round trip, and the encoder /
decoder cost split."""

from __future__ import annotations

import importlib.util
import io
import sys
import types

import numpy as np
import pytest
import torch

import zoo
from zoo.container import IMAGE_MAGIC, ContainerError, unpack
from zoo.cost import count_gmacs, count_params
from zoo.models.walloc import WALLOC_CONFIGS, Walloc, bior44_filters
from zoo.registry import get_entry


def _authors():
    """The authors' ``walloc.walloc`` module. Its ``pytorch_wavelets`` imports ``pkg_resources`` at
    import time (only its unused DTCWT needs it); setuptools >= 81 has none, so a stand-in is put in
    ``sys.modules`` for the import only."""
    pytest.importorskip("pywt")
    pytest.importorskip("diffusers")
    if "walloc.walloc" in sys.modules:
        return sys.modules["walloc.walloc"]
    stub = None
    if importlib.util.find_spec("pkg_resources") is None:
        import importlib.resources as res

        stub = types.ModuleType("pkg_resources")
        stub.resource_stream = lambda pkg, name: res.files(pkg).joinpath(name).open("rb")
        sys.modules["pkg_resources"] = stub
    try:
        return pytest.importorskip("walloc.walloc")
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]


def _image(h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.02 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return zoo.create("walloc_rgb").eval()


# -- the transform ------------------------------------------------------------------------------
def test_bior44_filters_are_pywavelets():
    pywt = pytest.importorskip("pywt")
    w = pywt.Wavelet("bior4.4")
    ours = bior44_filters()
    for name in ("dec_lo", "dec_hi", "rec_lo", "rec_hi"):
        np.testing.assert_allclose(ours[name], getattr(w, name), rtol=0, atol=1e-15, err_msg=name)


def test_one_level_is_pywavelets_periodized_dwt2_in_float64():
    """An independent float64 computation: PyWavelets' periodized 2-D DWT of each channel gives
    our four sub-bands (LL, W-low/H-high, W-high/H-low, HH) for channel c at 4c + f."""
    pywt = pytest.importorskip("pywt")
    m = Walloc(Nd=32).double()
    f = {k: torch.tensor(v, dtype=torch.float64) for k, v in bior44_filters().items()}
    with torch.no_grad():  # the buffers are float32 (as pytorch_wavelets'): give them float64 filters
        for name, buf in m.wt.named_buffers():
            buf.copy_(f["dec_lo" if name.startswith("h0") else "dec_hi"].flip(0).view_as(buf))
        for name, buf in m.iwt.named_buffers():
            buf.copy_(f["rec_lo" if name.startswith("g0") else "rec_hi"].view_as(buf))
    x = torch.rand(2, 3, 40, 56, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    X = m.wavelet_analysis(x, 1)
    assert X.shape == (2, 12, 20, 28)
    cA, (cH, cV, cD) = pywt.dwt2(x.numpy(), "bior4.4", mode="periodization", axes=(-2, -1))
    ref = np.stack([cA, cH, cV, cD], axis=2).reshape(2, 12, 20, 28)
    np.testing.assert_allclose(X.numpy(), ref, rtol=0, atol=1e-12)
    # three levels of the packet tree are perfect reconstruction at sizes the filters fit
    x3 = torch.rand(1, 3, 96, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = m.wavelet_synthesis(m.wavelet_analysis(x3))
    assert (y - x3).abs().max().item() < 1e-10  # pywt quotes the CDF 9/7 taps to ~1e-12


def test_transform_latents_and_reconstruction_match_walloc():
    W = _authors()
    for kw, size in ((dict(J=3, Nd=64, latent_dim=12, latent_bits=8, lightweight_encode=True, Ne=None), (64, 80)),
                     (dict(J=2, Nd=64, latent_dim=12, latent_bits=6, lightweight_encode=False, Ne=64), (32, 48))):
        torch.manual_seed(0)
        ref = W.Codec2D(channels=3, **kw).eval()
        ours = Walloc(channels=3, **kw).eval()
        sd = ref.state_dict()
        assert set(sd) == set(ours.state_dict())
        ours.load_state_dict(sd)
        x = _image(*size, seed=3)
        with torch.no_grad():
            X_ref = ref.wavelet_analysis(x - 0.5, J=ref.J)
            X = ours.wavelet_analysis(x - 0.5)
            torch.testing.assert_close(X, X_ref, rtol=0, atol=1e-5)
            z_ref = ref.encoder(X_ref)
            z = ours.encode(x)
            torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-5)
            torch.testing.assert_close(ours.wavelet_synthesis(X_ref), ref.wavelet_synthesis(X_ref, J=ref.J), rtol=0, atol=1e-5)
            x_hat_ref, _, _ = ref(x - 0.5)
            torch.testing.assert_close(ours(x), x_hat_ref + 0.5, rtol=0, atol=1e-5)


def test_authors_file_layout_loads(tmp_path):
    W = _authors()
    torch.manual_seed(1)
    ref = W.Codec2D(channels=3, J=3, Ne=None, Nd=64, latent_dim=12, latent_bits=8, lightweight_encode=True).eval()
    f = tmp_path / "RGB_16x.pth"  # the published files hold {"model_state_dict": ..., "optimizer_state_dict": ...}
    torch.save({"model_state_dict": ref.state_dict(), "optimizer_state_dict": {"state": {}, "param_groups": []}}, f)
    torch.manual_seed(2)
    m = zoo.create("walloc_rgb", Nd=64, checkpoint_path=f).eval()
    x = _image(48, 64, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x - 0.5)[0] + 0.5, rtol=0, atol=1e-5)


def test_params_are_the_authors_published_configs():
    W = _authors()
    torch.distributions.Distribution.set_default_validate_args(False)  # their Normal() on the meta device
    try:
        for q, cfg in WALLOC_CONFIGS.items():
            with torch.device("meta"):
                ref = W.Codec2D(**cfg)
                ours = Walloc(**cfg)
            assert count_params(ours) == count_params(ref), q
    finally:
        torch.distributions.Distribution.set_default_validate_args(True)
    assert get_entry("walloc_rgb").params == 56_885_964


# -- costs ----------------------------------------------------------------------------------------
def test_encoder_is_a_tiny_fraction_of_the_decoder(codec):
    """WaLLoC's asymmetry is the other way round from shallow-decoder codecs: the encoder is one
    1x1 conv on the packet coefficients."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as analysis:
        X = codec.wavelet_analysis(torch.rand(1, 3, 256, 256))
    with torch.no_grad(), FlopCounterMode(display=False) as synthesis:
        codec.wavelet_synthesis(X)
    enc = analysis.get_total_flops() / 2e9 + count_gmacs(codec.encoder, (192, 32, 32))
    dec = count_gmacs(codec.decoder, (12, 32, 32)) + synthesis.get_total_flops() / 2e9
    assert enc + dec == pytest.approx(get_entry("walloc_rgb").gmacs, rel=1e-4)
    assert enc < 0.001 * dec, (enc, dec)
    assert 16 * count_params(codec.encoder) < 0.001 * count_params(codec.decoder)


# -- bitstream ------------------------------------------------------------------------------------
def test_round_trip_is_exact_and_deterministic(codec):
    x = _image(72, 100, seed=5)
    a, b = codec.compress_bytes(x), codec.compress_bytes(x)
    assert a == b
    y = codec.decompress_bytes(a)
    assert y.shape == x.shape
    with torch.no_grad():
        ref = codec(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)  # the WebP is lossless: same integers


def test_latent_bytes_are_the_authors_webp(codec):
    W = _authors()
    x = _image(64, 64, seed=6)
    header, groups = unpack(codec.compress_bytes(x), IMAGE_MAGIC)
    assert header["shape"] == [8, 8] and header["latent"] == "webp-lossless"
    with torch.no_grad():
        z = codec.encode(x)
    buf = io.BytesIO()
    W.latent_to_pil(z, codec.latent_bits, 3)[0].save(buf, format="WEBP", lossless=True)
    assert groups[0][0] == buf.getvalue()


def test_rate_from_bytes_is_close_to_the_latent_entropy():
    """A latent with real spread (encoder weights ~ N(0, 1)): lossless WebP costs within a few
    percent of the zeroth-order entropy that rate_distortion reports."""
    torch.manual_seed(0)
    m = Walloc(Nd=32).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.encoder[0].weight.normal_(0, 1.0, generator=g)
    x = _image(256, 256, seed=7)
    real_bits = 8 * len(m.compress_bytes(x))
    with torch.no_grad():
        est_bits = float(m.rate_distortion(x)["bpp"]) * 256 * 256
    assert est_bits > 20_000
    assert 0.9 * est_bits < real_bits < 1.15 * est_bits + 8 * 400, (real_bits, est_bits)


def test_container_and_shape_errors(codec):
    data = codec.compress_bytes(_image(32, 32))
    with pytest.raises(ContainerError, match="truncated"):
        codec.decompress_bytes(data[:40])
    torch.manual_seed(9)
    other = Walloc(**{**WALLOC_CONFIGS[1], "Nd": 32}, quality=1)  # same model name and quality, other weights
    with pytest.raises(ContainerError, match="other walloc_rgb weights"):
        other.decompress_bytes(data)
    q2 = Walloc(**{**WALLOC_CONFIGS[2], "Nd": 32}, quality=2)
    with pytest.raises(ContainerError, match="quality 1"):
        q2.decompress_bytes(data)
    with pytest.raises(ValueError, match="quality must be one of"):
        zoo.create("walloc_rgb", quality=3)
    with pytest.raises(ValueError, match="expected 12 channels"):
        codec.decode(torch.zeros(1, 13, 4, 4))
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.rand(1, 3, 30, 32))
