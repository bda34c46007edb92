"""EnCodec (models/encodec.py) against the authors' ``encodec`` package (0.1.1): the same seeded
random state dict, loaded strictly into both, gives identical codes and the same decoded audio
at every bandwidth of both models, including the 48 kHz model's normalised, overlapping 1 s
segments; state-dict keys and shapes equal; the published file layout loads through the cfg."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import zoo
from zoo.cost import count_params
from zoo.models.encodec import EncodecModel, linear_overlap_add
from zoo.registry import get_entry

encodec = pytest.importorskip("encodec")

BANDWIDTHS = {"encodec_24khz": [1.5, 3.0, 6.0, 12.0, 24.0], "encodec_48khz": [3.0, 6.0, 12.0, 24.0]}


@pytest.fixture(autouse=True)
def _one_thread():
    # the full-size models run much faster on one thread on a shared CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _authors(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if name == "encodec_24khz":
            return encodec.EncodecModel.encodec_model_24khz(pretrained=False)
        return encodec.EncodecModel.encodec_model_48khz(pretrained=False)


def _seeded_state(model: EncodecModel, seed: int) -> dict[str, torch.Tensor]:
    """Random weights (the model's own init under ``seed``) and codebooks drawn from the
    residuals of a random signal at each stage (plus noise), so that the codes vary over time
    and across codebooks."""
    torch.manual_seed(seed)
    fresh = type(model)(**{k: getattr(model, k) for k in ("sample_rate", "channels", "causal", "normalize",
                                                           "segment", "target_bandwidths")},
                        norm=model._arch["norm"])
    g = torch.Generator().manual_seed(seed + 1)
    sd = fresh.state_dict()
    with torch.no_grad():
        x = 0.3 * torch.randn(1, model.channels, model.sample_rate // 2, generator=g)
        x = x * torch.linspace(0.05, 1, x.shape[-1]) ** 2  # loudness varies: so do the latents
        residual = fresh.encoder(x)[0].t()  # (frames, D)
    for i in range(model.n_codebooks):
        p = f"quantizer.vq.layers.{i}._codebook."
        k = sd[p + "embed"].shape[0]
        pick = torch.randint(0, residual.shape[0], (k,), generator=g)
        embed = residual[pick] + 0.3 * residual.std() * torch.randn(residual[pick].shape, generator=g)
        sd[p + "embed"], sd[p + "embed_avg"] = embed, embed.clone()
        sd[p + "cluster_size"] = torch.full_like(sd[p + "cluster_size"], 3.0)
        sd[p + "inited"] = torch.ones_like(sd[p + "inited"])
        residual = residual - embed[torch.cdist(residual, embed).argmin(1)]
    return sd


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_state_dict_layout_equals_authors(name):
    ours = zoo.create(name)
    theirs = _authors(name)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert count_params(ours) == sum(p.numel() for p in theirs.parameters()) == get_entry(name).params
    assert ours.hop_length == int(theirs.encoder.hop_length)
    assert ours.n_codebooks == theirs.quantizer.n_q and ours.codebook_size == theirs.quantizer.bins
    assert ours.target_bandwidths == theirs.target_bandwidths
    assert ours.bitrates[1] == pytest.approx(BANDWIDTHS[name][0])


@pytest.mark.parametrize("name,length", [("encodec_24khz", 9_000), ("encodec_48khz", 26_000)])
def test_random_weight_parity_every_bandwidth(name, length):
    ours = zoo.create(name).eval()
    theirs = _authors(name).eval()
    sd = _seeded_state(ours, seed=3)
    ours.load_state_dict(sd, strict=True)
    theirs.load_state_dict(sd, strict=True)
    if name == "encodec_48khz":  # the bandwidth sweep on 0.5 s segments (time); 1 s below
        ours.segment = theirs.segment = 0.5

    def signal(length, seed):
        g = torch.Generator().manual_seed(seed)
        wav = 0.3 * torch.randn(1, ours.channels, length, generator=g) * torch.linspace(0.1, 1, length) ** 2
        wav[..., length // 2 :] *= 0.2  # segments of different loudness (48 kHz: different scales)
        return wav

    wav = signal(length, 5)
    max_err = 0.0
    for bw in BANDWIDTHS[name]:
        ours.set_target_bandwidth(bw)
        theirs.set_target_bandwidth(bw)
        with torch.no_grad():
            frames = theirs.encode(wav)
            codes, scales = ours.encode(wav, return_scales=True)
            ref_codes = torch.cat([c for c, _ in frames], -1)
            assert codes.shape == ref_codes.shape == (1, ours.n_quantizers_for_bandwidth(bw), codes.shape[-1])
            assert torch.equal(codes, ref_codes), f"{name} @ {bw} kbps: codes differ"
            assert len(set(codes.flatten().tolist())) > 4  # the codes are not degenerate
            if name == "encodec_48khz":
                assert len(frames) == 2 and scales.shape == (1, 2)
                torch.testing.assert_close(scales, torch.cat([s for _, s in frames], 1), rtol=0, atol=0)
                assert abs(float(scales[0, 0] / scales[0, 1]) - 1) > 0.1  # two different loudnesses
            else:
                assert scales is None and codes.shape[-1] == -(-length // 320)
            out, ref = ours.decode(codes, scales), theirs.decode(frames)
            assert out.shape == ref.shape
            err = float((out - ref).abs().max())
            max_err = max(max_err, err)
            assert err < 1e-4, f"{name} @ {bw} kbps: decoded audio differs by {err:.2e}"
    # forward (the trimmed reconstruction) equals the authors' forward; 48 kHz: their 1 s segments
    if name == "encodec_48khz":
        ours.segment = theirs.segment = 1.0
        wav = signal(52_000, 6)  # segments [0, 48000) and [47520, 52000)
    with torch.no_grad():
        y, y_ref = ours(wav), theirs(wav)
    assert y.shape == wav.shape
    err = float((y - y_ref).abs().max())
    assert err < 1e-4
    print(f"{name}: max |decoded - authors'| = {max(max_err, err):.3g}")


def test_authors_reference_and_narrow_parity():
    """A narrow model (not the authors' factory sizes) through ``authors_reference()``."""
    torch.manual_seed(0)
    ours = zoo.create("encodec_48khz", n_filters=4, dimension=16, codebook_size=64, n_q=4, segment=0.05).eval()
    for p in ours.quantizer.vq.layers:
        p._codebook.embed.normal_(0, 0.5)
    ref = ours.authors_reference()
    assert isinstance(ref, encodec.EncodecModel) and not ref.training
    wav = 0.2 * torch.randn(2, 2, 6000)
    with torch.no_grad():
        assert torch.equal(ours.encode(wav), torch.cat([c for c, _ in ref.encode(wav)], -1))
        torch.testing.assert_close(ours(wav), ref(wav), rtol=0, atol=1e-5)


def test_pretrained_cfgs_point_at_the_authors_files(tmp_path):
    src = inspect.getsource(encodec.model.EncodecModel)
    for name in ("encodec_24khz", "encodec_48khz"):
        cfg = get_entry(name).get_cfg()
        assert cfg.url.startswith(encodec.model.ROOT_URL)
        assert cfg.cache_filename in src  # the checkpoint name the package downloads
        assert cfg.license == "MIT" and cfg.verified is False and cfg.sha256 is None
    # a file in the authors' layout (their model's state dict, torch.save'd) loads through the cfg
    theirs = _authors("encodec_24khz").eval()
    with torch.no_grad():
        for layer in theirs.quantizer.vq.layers:
            layer._codebook.embed.normal_(0, 0.05)
            layer._codebook.inited.fill_(1)
    f = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(theirs.state_dict(), f)
    ours = zoo.create("encodec_24khz", checkpoint_path=f).eval()
    wav = 0.1 * torch.randn(1, 1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(ours(wav), theirs(wav), rtol=0, atol=1e-5)


def test_causal_streaming_equals_one_shot():
    """encodec_24khz (full size, seeded weights): pieces of any size in, codes out as frames
    complete; frame-by-frame decoding; both equal the one-shot results."""
    if not hasattr(EncodecModel, "stream_encode"):
        pytest.skip("no streaming API in AudioCodec")
    m = zoo.create("encodec_24khz").eval()
    m.load_state_dict(_seeded_state(m, seed=11), strict=True)
    assert m.causal and m.stream_warmup_frames == 7 and m.algorithmic_latency_ms == pytest.approx(1000 / 75)
    g = torch.Generator().manual_seed(2)
    wav = 0.3 * torch.randn(1, 1, 320 * 20, generator=g) * torch.linspace(0.2, 1, 320 * 20)
    with torch.no_grad():
        codes = m.encode(wav, n_quantizers=8)
        ref = m.decode(codes)
    sizes = [100, 7, 700, 320, 1000, 333, 2000, 1940]
    bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
    assert bounds[-1] == wav.shape[-1]
    pieces = [wav[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    streamed = list(m.stream_encode(pieces, n_quantizers=8))
    assert len(streamed) == 3  # held until 7 frames, then as frames complete
    assert torch.equal(torch.cat(streamed, -1), codes)
    out = list(m.stream_decode(codes[..., i : i + 1] for i in range(codes.shape[-1])))
    assert len(out) == codes.shape[-1] - m.stream_warmup_frames + 1
    err = float((torch.cat(out, -1) - ref).abs().max())
    assert err < 1e-5, err
    with pytest.raises(ValueError, match="3-D"):
        list(m.stream_encode([wav[0]]))


def test_compressed_file_round_trip_with_scales():
    """encodec_48khz's per-segment scales travel in the file; decompress equals forward."""
    torch.manual_seed(0)
    m = zoo.create("encodec_48khz", n_filters=4, dimension=16, codebook_size=64, n_q=4, segment=0.05).eval()
    for layer in m.quantizer.vq.layers:
        layer._codebook.embed.normal_(0, 0.3)
    wav = 0.3 * torch.randn(1, 2, 6000) * torch.linspace(0.1, 1, 6000)
    data = m.compress(wav)
    with torch.no_grad():
        torch.testing.assert_close(m.decompress(data), m(wav), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        m.decompress(data[: len(data) // 2])


def test_training_pass_dropout_and_ema():
    torch.manual_seed(0)
    m = zoo.create("encodec_24khz", n_filters=4, dimension=16, kmeans_iters=2).train()
    assert m.quantizer.dropout_n_q == [2, 4, 8, 16, 32]
    wav = 0.2 * torch.randn(2, 1, 1600)
    seen = set()
    for _ in range(6):
        out = m.forward_train(wav)
        seen.add(out["codes"].shape[1])
        assert out["wav"].shape == wav.shape and torch.isfinite(out["commitment_loss"])
    assert seen <= {2, 4, 8, 16, 32} and len(seen) > 1
    assert float(m.quantizer.vq.layers[0]._codebook.inited) == 1.0  # k-means ran on the first batch
    out = m.forward_train(wav, n_quantizers=3)
    assert out["codes"].shape[1] == 3
    m.eval()
    m.set_target_bandwidth(3.0)
    assert m.encode(wav).shape == (2, 4, 5)


def test_overlap_add_cross_fades():
    a, b = torch.ones(1, 10), 3 * torch.ones(1, 10)
    out = linear_overlap_add([a, b], stride=6)
    assert out.shape == (1, 16)
    assert torch.equal(out[0, :6], torch.ones(6)) and torch.equal(out[0, 10:], 3 * torch.ones(6))
    assert bool((out[0, 6:10].diff() > 0).all())  # a monotone fade from a to b in the overlap


def test_bad_input():
    m = zoo.create("encodec_48khz", n_filters=4, dimension=16, codebook_size=64, n_q=4, segment=0.05).eval()
    wav = torch.zeros(1, 2, 3000)
    with pytest.raises(ValueError, match="expected 2 channels"):
        m.encode(wav[:, :1])
    with pytest.raises(ValueError, match="3-D"):
        m(wav[0])
    with pytest.raises(ValueError, match="floating-point"):
        m.encode(wav.long())
    with pytest.raises(ValueError, match="NaN"):
        m.encode(torch.full((1, 2, 100), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        m.encode(wav[..., :0])
    codes, scales = m.encode(wav, return_scales=True)
    with pytest.raises(ValueError, match="needs the scales"):
        m.decode(codes)
    with pytest.raises(ValueError, match=r"scales must be \(B, segments\)"):
        m.decode(codes, scales[:, :1])
    with pytest.raises(ValueError, match="integer"):
        m.decode(codes.float(), scales)
    with pytest.raises(ValueError, match="codebooks"):
        m.decode(torch.cat([codes, codes], 1), scales)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 64\)"):
        m.decode(codes + 64, scales)
    with pytest.raises(ValueError, match="bandwidth 5"):
        m.set_target_bandwidth(5)
    with pytest.raises(ValueError, match="n_quantizers must be in 1..4"):
        m.encode(wav, n_quantizers=9)
