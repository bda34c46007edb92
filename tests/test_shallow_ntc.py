"""Shallow-decoder NTC (mandt-lab/shallow-ntc, TensorFlow upstream): parameter counts and
FLOPs/pixel against the authors' published tables, TensorFlow "SAME" (transposed) convolution
arithmetic, the scale table, real bitstreams (round trip, rate from the bytes close to the
likelihoods), mixed quantization, and the cheap decoder."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.container import ContainerError
from zoo.cost import count_gmacs, count_params
from zoo.models.shallow_ntc import (
    CNNAnalysis,
    Conv2dSame,
    ConvTranspose2dSame,
    ElicAnalysis,
    JPEGLikeSynthesis,
    TwoLayerResSynthesis,
    TwoLayerSynthesis,
    hyper_analysis,
    hyper_synthesis,
    scale_from_index,
    tf_same_padding,
)

# The authors' results/all_params.csv (f = analysis, g = synthesis, f_h / g_h = hyper transforms).
AUTHORS_PARAMS = {"elic_f": 7_337_792, "two_layer_g": 1_299_003, "jpeg_like_g": 311_043,
                  "f_h": 6_042_560, "g_h": 9_166_240}
# The authors' results/flops_per_pixel.csv (FLOPs = 2 x MACs, plus their profiler's bias adds).
AUTHORS_FLOPS_PER_PIXEL = {"elic_f": 510_845.5, "f_h": 13_451.640625, "two_layer_g": 10_680.001190185547,
                           "jpeg_like_g": 2_433.0, "g_h": 30_354.6875}


def _image(h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.02 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def cnn_codec():
    torch.manual_seed(0)
    return zoo.create("shallow_ntc_2layer_cnn", quality=1).eval()


def test_params_are_the_authors():
    assert count_params(ElicAnalysis()) == AUTHORS_PARAMS["elic_f"]
    assert count_params(TwoLayerResSynthesis()) == AUTHORS_PARAMS["two_layer_g"]
    assert count_params(JPEGLikeSynthesis()) == AUTHORS_PARAMS["jpeg_like_g"]
    assert count_params(hyper_analysis(320)) == AUTHORS_PARAMS["f_h"]
    assert count_params(hyper_synthesis(320)) == AUTHORS_PARAMS["g_h"]
    # two_layer_syn2.py (not in the table): CNNAnalysis(256, 320) and TwoLayerSynthesis((24, 3), k 13 / 5)
    assert count_params(CNNAnalysis()) == (3 * 256 * 25 + 256) + 2 * (256 * 256 * 25 + 256) + (256 * 320 * 25 + 320)
    assert count_params(TwoLayerSynthesis(channels=(24, 3))) == (320 * 24 * 169 + 24) + (24 + 24 * 24) + (24 * 3 * 25 + 3)


def test_flops_per_pixel_are_the_authors():
    px = 256 * 256
    ours = {
        "elic_f": count_gmacs(ElicAnalysis(), (3, 256, 256)),
        "f_h": count_gmacs(hyper_analysis(320), (320, 16, 16)),
        "two_layer_g": count_gmacs(TwoLayerResSynthesis(), (320, 16, 16)),
        "jpeg_like_g": count_gmacs(JPEGLikeSynthesis(), (320, 16, 16)),
        "g_h": count_gmacs(hyper_synthesis(320), (320, 4, 4)),
    }
    for key, gmacs in ours.items():
        # our counter has the convolutions' MACs only; the authors' TF profiler adds bias adds etc.
        assert 2 * gmacs * 1e9 / px == pytest.approx(AUTHORS_FLOPS_PER_PIXEL[key], rel=5e-3), key


@pytest.mark.parametrize("name, ratio", [("shallow_ntc_2layer", 40), ("shallow_ntc_jpeg_like", 200),
                                          ("shallow_ntc_2layer_cnn", 20)])
def test_decoder_is_much_cheaper_than_encoder(name, ratio):
    m = zoo.create(name)
    analysis = count_gmacs(m.g_a, (3, 256, 256))
    synthesis = count_gmacs(m.g_s, (320, 16, 16))
    assert analysis > ratio * synthesis, (analysis, synthesis)
    assert f"{analysis:.2f} GMACs" in zoo.info(name)["description"]


def test_tf_same_convolutions():
    # TensorFlow's SAME: total padding max((ceil(n/s) - 1) s + k - n, 0), the extra pixel after
    assert tf_same_padding(64, 5, 2) == (1, 2)
    assert tf_same_padding(65, 5, 2) == (2, 2)
    assert tf_same_padding(16, 3, 1) == (1, 1)
    assert tf_same_padding(16, 1, 1) == (0, 0)
    torch.manual_seed(0)
    for cin, cout, k, s, n in ((4, 3, 5, 2, 12), (5, 2, 13, 8, 3), (6, 3, 18, 16, 2), (4, 4, 3, 1, 7)):
        conv = Conv2dSame(cout, cin, k, s)  # the forward conv that the transposed one is the gradient of
        convT = ConvTranspose2dSame(cin, cout, k, s)
        with torch.no_grad():
            convT.weight.copy_(conv.weight)
            convT.bias.zero_()
        x = torch.randn(1, cout, n * s, n * s, dtype=torch.float64, requires_grad=True)
        g = torch.randn(1, cin, n, n, dtype=torch.float64)
        conv, convT = conv.double(), convT.double()
        y = conv(x)
        assert y.shape == g.shape
        (grad,) = torch.autograd.grad((y * g).sum(), x)
        # tf.nn.conv2d_transpose(padding="SAME") is defined as this gradient
        torch.testing.assert_close(convT(g), grad, rtol=0, atol=1e-10)


def test_scale_table_is_compressais():
    from compressai.models.google import get_scale_table

    torch.testing.assert_close(scale_from_index(torch.arange(64.0)), get_scale_table(), rtol=1e-5, atol=0)


def test_round_trip_is_exact_and_deterministic(cnn_codec):
    x = _image()
    a, b = cnn_codec.compress_bytes(x), cnn_codec.compress_bytes(x)
    assert a == b
    y = cnn_codec.decompress_bytes(a)
    assert y.shape == x.shape
    with torch.no_grad():
        ref = cnn_codec(x).clamp(0, 1)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)


def test_two_layer_residual_round_trip():
    torch.manual_seed(0)
    m = zoo.create("shallow_ntc_2layer", quality=7).eval()
    assert m.rd_lambda == 0.08
    x = _image(64, 64, seed=2)
    y = m.decompress_bytes(m.compress_bytes(x))
    with torch.no_grad():
        torch.testing.assert_close(y, m(x).clamp(0, 1), rtol=0, atol=1e-5)


def test_rate_from_bytes_matches_the_likelihoods(cnn_codec):
    x = _image(128, 192, seed=1)
    data = cnn_codec.compress_bytes(x)
    with torch.no_grad():
        est_bits = float(cnn_codec.rate_distortion(x)["bpp"]) * 128 * 192
    real_bits = 8 * len(data)
    assert est_bits * 0.97 < real_bits < est_bits * 1.05 + 8 * 400, (real_bits, est_bits)


def test_mixed_quantization_decodes_rounded_latents():
    torch.manual_seed(0)
    m = zoo.create("shallow_ntc_2layer_cnn").train()
    x = _image(64, 64, seed=3)
    a, b = m.rate_distortion(x), m.rate_distortion(x)
    torch.testing.assert_close(a["x_hat"], b["x_hat"], rtol=0, atol=0)  # the decoder sees round(y - mu) + mu
    assert not torch.equal(a["bpp"], b["bpp"])  # the rate sees y + noise
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.rate_distortion(x)["x_hat"], a["x_hat"].detach(), rtol=0, atol=1e-6)
    m2 = zoo.create("shallow_ntc_2layer_cnn", mixed_quantization=False).train()
    assert not torch.equal(m2.rate_distortion(x)["x_hat"], m2.rate_distortion(x)["x_hat"])


def test_errors(cnn_codec):
    with pytest.raises(ValueError, match="quality must be one of"):
        zoo.create("shallow_ntc_jpeg_like", quality=8)
    data = cnn_codec.compress_bytes(_image(64, 64))
    torch.manual_seed(5)
    q2 = zoo.create("shallow_ntc_2layer_cnn", quality=2).eval()
    with pytest.raises(ContainerError, match="quality 1"):
        q2.decompress_bytes(data)
    with pytest.raises(ValueError, match="expected 3 channels"):
        cnn_codec(torch.rand(1, 4, 64, 64))
