"""Quantizers (models/layers/quantize.py) and the nearest-codeword op (models/ops/vq.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from zoo.models import ops
from zoo.models.layers.quantize import (
    FSQ,
    FactorizedVQ,
    GroupResidualVQ,
    MaskChannelRVQ,
    QuantizerOutput,
    ResidualVQ,
    VectorQuantize,
)
from zoo.models.ops.vq import nearest_codeword, nearest_codeword_reference

# ------------------------------------------------------------------------------ the op


def test_op_is_registered():
    assert "nearest_codeword" in ops.list_ops()
    assert ops.op_backends("nearest_codeword")[0] == "reference"
    x, c = torch.randn(5, 3), torch.randn(7, 3)
    assert torch.equal(ops.call_op("nearest_codeword", x, c), nearest_codeword(x, c, backend="reference"))


def test_nearest_codeword_l2_and_cosine_match_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    c = torch.randn(64, 8, generator=g, dtype=torch.float64) * torch.rand(64, 1, generator=g, dtype=torch.float64) * 3
    l2 = nearest_codeword(x, c)
    assert l2.dtype == torch.long and l2.shape == (300,)
    assert torch.equal(l2, torch.cdist(x, c).argmin(1))
    cos = nearest_codeword(x, c, metric="cosine")
    assert torch.equal(cos, (F.normalize(x) @ F.normalize(c).t()).argmax(1))
    assert not torch.equal(cos, l2)  # codeword norms matter for L2 only


def test_nearest_codeword_chunks_bound_memory_and_agree():
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(200, 8, generator=g), torch.randn(128, 8, generator=g)
    full = nearest_codeword_reference(x, c)
    for max_elements in (128, 128 * 7, 128 * 199):  # 1, 7, 199 rows per chunk
        assert torch.equal(nearest_codeword_reference(x, c, max_elements=max_elements), full)


def test_nearest_codeword_bad_input():
    with pytest.raises(ValueError, match="dims per row"):
        nearest_codeword(torch.randn(4, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        nearest_codeword(torch.randn(4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="metric"):
        nearest_codeword(torch.randn(4, 3), torch.randn(5, 3), metric="l1")
    with pytest.raises(ValueError, match="empty"):
        nearest_codeword(torch.randn(4, 3), torch.randn(0, 3))


def test_nearest_codeword_has_no_gradient_path():
    x = torch.randn(6, 3, requires_grad=True)
    idx = nearest_codeword(x, torch.randn(4, 3))
    assert not idx.requires_grad


# ------------------------------------------------------------------------------ quantizers


def _quantizers():
    return {
        "factorized": FactorizedVQ(32, 64, 4),
        "vq": VectorQuantize(16, 64),
        "rvq": ResidualVQ(32, 4, 64, 4, quantizer_dropout=0.5),
        "grvq": GroupResidualVQ(32, n_groups=2, n_codebooks_per_group=3, codebook_size=64, codebook_dim=4),
        "fsq": FSQ([8, 5, 5, 5]),
        "fsq_proj": FSQ([7, 6, 5], dim=16),
        "mask_rvq": MaskChannelRVQ(30, n_codebooks=6, codebook_size=64, n_masked=3),
    }


@pytest.mark.parametrize("name", list(_quantizers()))
def test_round_trip_codes_in_range_and_gradients(name):
    q = _quantizers()[name]
    z = torch.randn(3, q.input_dim, 10, generator=torch.Generator().manual_seed(2))
    q.eval()
    with torch.no_grad():
        out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert out.z_q.shape == z.shape and out.codes.dtype == torch.long
    assert out.codes.shape == (3, q.n_codebooks, 10)
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < q.codebook_size
    codes = q.encode(z)
    assert torch.equal(codes, out.codes)
    # decode(encode(z)) is forward's z_q (DAC's factorised VQ applies its straight-through
    # expression z_e + (z_q - z_e) in eval too, hence a rounding-level difference)
    torch.testing.assert_close(q.decode(codes), out.z_q, rtol=0, atol=1e-5)
    assert out.commitment_loss.ndim == 0 and out.codebook_loss.ndim == 0

    # straight-through: gradients reach the input and the trainable parameters
    q.train()
    zg = z.clone().requires_grad_()
    out = q(zg)
    (out.z_q.square().mean() + out.commitment_loss + out.codebook_loss).backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0
    for n, p in q.named_parameters():
        assert p.grad is not None, n


def test_straight_through_gradient_is_identity():
    q = VectorQuantize(8, 32).train()
    z = torch.randn(2, 8, 5, requires_grad=True)
    out = q(z)
    gout = torch.randn_like(out.z_q)
    (out.z_q * gout).sum().backward()
    torch.testing.assert_close(z.grad, gout)
    # the codebook learns from the codebook loss only, the encoder from the commitment loss
    q.zero_grad()
    z2 = z.detach().clone().requires_grad_()
    q(z2).codebook_loss.backward()
    assert z2.grad is None or z2.grad.abs().sum() == 0
    assert q.codebook.weight.grad.abs().sum() > 0


def test_codes_are_nearest_codewords():
    q = VectorQuantize(4, 16).eval()
    z = torch.randn(2, 4, 7)
    codes = q.encode(z)[:, 0]
    d = torch.cdist(z.transpose(1, 2).reshape(-1, 4), q.codebook.weight)
    assert torch.equal(codes.reshape(-1), d.argmin(1))
    f = FactorizedVQ(16, 32, 4).eval()
    z = torch.randn(2, 16, 7)
    z_e = f.in_proj(z).transpose(1, 2).reshape(-1, 4)
    sim = F.normalize(z_e) @ F.normalize(f.codebook.weight).t()
    assert torch.equal(f.encode(z)[:, 0].reshape(-1), sim.argmax(1))


def test_residual_vq_variable_bitrate_prefix():
    q = ResidualVQ(32, 5, 64, 4).eval()
    z = torch.randn(2, 32, 9)
    full = q.encode(z)
    for n in range(1, 6):
        out = q(z, n_quantizers=n)
        assert torch.equal(out.codes, full[:, :n]) and torch.equal(q.encode(z, n), full[:, :n])
        torch.testing.assert_close(q.decode(full[:, :n]), out.z_q, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="n_quantizers"):
        q(z, n_quantizers=6)


def test_quantizer_dropout_only_in_training():
    q = ResidualVQ(32, 6, 64, 4, quantizer_dropout=1.0)
    z = torch.randn(8, 32, 4)
    q.eval()
    with torch.no_grad():
        ref = q(z).z_q
        for _ in range(3):  # eval ignores dropout
            assert torch.equal(q(z).z_q, ref)
    q.train()
    torch.manual_seed(0)
    n_q = torch.randint(1, 7, (8,))  # the draw the module makes with the same seed (DAC's)
    torch.manual_seed(0)
    with torch.no_grad():
        out = q(z)
        assert out.codes.shape[1] == 6  # every stage runs, later ones are masked per item
        for b in range(8):
            expected = q.decode(out.codes[b : b + 1, : int(n_q[b])])
            torch.testing.assert_close(out.z_q[b : b + 1], expected, rtol=0, atol=1e-5)
    assert len(set(n_q.tolist())) > 1
    # without dropout, training uses every codebook; an explicit n_quantizers wins
    q0 = ResidualVQ(32, 6, 64, 4, quantizer_dropout=0.0)
    q0.load_state_dict(q.state_dict())
    q0.train()
    with torch.no_grad():
        torch.testing.assert_close(q0(z).z_q, ref, rtol=0, atol=1e-5)
        assert q0(z, n_quantizers=2).codes.shape[1] == 2


def test_group_residual_vq_layout():
    q = GroupResidualVQ(32, n_groups=2, n_codebooks_per_group=3, codebook_size=64, codebook_dim=4).eval()
    z = torch.randn(2, 32, 6)
    codes = q.encode(z)
    assert codes.shape == (2, 6, 6)
    # stage-major: codes[:, s * G + g] are group g's stage s
    for g, grp in enumerate(q.groups):
        assert torch.equal(codes[:, g::2], grp.encode(z[:, g * 16 : (g + 1) * 16]))
    # groups are independent: changing group 1's channels leaves group 0's codes alone
    z2 = z.clone()
    z2[:, 16:] = torch.randn(2, 16, 6)
    codes2 = q.encode(z2)
    assert torch.equal(codes2[:, 0::2], codes[:, 0::2]) and not torch.equal(codes2[:, 1::2], codes[:, 1::2])
    # a prefix of whole stages is a lower bitrate
    out = q(z, n_quantizers=4)
    assert torch.equal(out.codes, codes[:, :4])
    torch.testing.assert_close(q.decode(codes[:, :4]), out.z_q, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        q(z, n_quantizers=3)
    with pytest.raises(ValueError, match="multiples"):
        q.decode(codes[:, :3])
    with pytest.raises(ValueError, match="divisible"):
        GroupResidualVQ(30, n_groups=4)


# ------------------------------------------------------------------------------ FSQ


@pytest.mark.parametrize("levels", [[3], [4], [8, 5, 5, 5], [7, 6, 5, 2]])
def test_fsq_code_index_bijection(levels):
    q = FSQ(levels)
    size = q.codebook_size
    assert size == torch.tensor(levels).prod().item()
    idx = torch.arange(size)
    values = q.indices_to_codes(idx)
    assert torch.equal(q.codes_to_indices(values), idx)
    # every combination of per-dimension values appears exactly once
    per_dim = [sorted(set(values[:, i].tolist())) for i in range(len(levels))]
    for L, vals in zip(levels, per_dim):
        h = L // 2
        assert vals == pytest.approx([(d - h) / h for d in range(L)], abs=1e-7)
    assert len({tuple(v) for v in values.tolist()}) == size
    combos = set(itertools.product(*per_dim))
    assert combos == {tuple(v) for v in values.tolist()}


def test_fsq_quantization_values():
    q = FSQ([5, 4]).eval()
    z = torch.randn(4, 2, 50) * 3
    out = q(z)
    # bounded then rounded: odd L takes L values symmetric about 0, even L is offset by 1/2
    b = q.bound(z.transpose(1, 2))
    expected = torch.round(b) / torch.tensor([2.0, 2.0])
    torch.testing.assert_close(out.z_q.transpose(1, 2), expected, rtol=0, atol=0)
    assert set(out.z_q[:, 0].unique().tolist()) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(out.z_q[:, 1].unique().tolist()) <= {-1.0, -0.5, 0.0, 0.5}
    assert out.commitment_loss == 0 and out.codebook_loss == 0
    # very large inputs saturate at the extreme levels
    big = q.encode(torch.full((1, 2, 1), 100.0))
    assert int(big) == (5 - 1) + 5 * (4 - 1)


# ------------------------------------------------------------------------------ mask-channel RVQ


def _languagecodec_forward(layers, x, n_q):
    """Language-Codec's LanguageVectorQuantization.forward (jishengpeng/Languagecodec,
    encodec/quantization/core_vq.py), transcribed for three masked quantizers."""
    quantized_out = 0.0
    residual = x
    s1, s2 = residual.size(1) // 3, 2 * residual.size(1) // 3
    indices = []
    q0 = q1 = q2 = None
    for i in range(n_q):
        if i == 0:
            r0 = torch.cat((residual[:, :s1], torch.zeros_like(residual[:, s1:])), dim=1)
            q0 = layers[i](r0)
            quantized_out = quantized_out + q0.z_q
        elif i == 1:
            r1 = torch.cat((torch.zeros_like(residual[:, :s1]), residual[:, s1:s2], torch.zeros_like(residual[:, s2:])), 1)
            q1 = layers[i](r1)
            quantized_out = quantized_out + q1.z_q
        elif i == 2:
            r2 = torch.cat((torch.zeros_like(residual[:, :s2]), residual[:, s2:]), dim=1)
            q2 = layers[i](r2)
            quantized_out = quantized_out + q2.z_q
        elif i == 3:
            residual = residual - q0.z_q.detach() - q1.z_q.detach() - q2.z_q.detach()
            quantized = layers[i](residual)
            quantized_out = quantized_out + quantized.z_q
        else:
            residual = residual - quantized.z_q.detach()
            quantized = layers[i](residual)
            quantized_out = quantized_out + quantized.z_q
        indices.append({0: q0, 1: q1, 2: q2}[i].codes if i < 3 else quantized.codes)
    return quantized_out, torch.cat(indices, dim=1)


@pytest.mark.parametrize("dim", [30, 32])
def test_mask_channel_rvq_matches_languagecodec(dim):
    q = MaskChannelRVQ(dim, n_codebooks=6, codebook_size=64, n_masked=3).eval()
    z = torch.randn(2, dim, 8)
    for n_q in (2, 3, 4, 6):
        with torch.no_grad():
            out = q(z, n_quantizers=n_q)
            ref_z, ref_codes = _languagecodec_forward(q.layers, z, n_q)
        assert torch.equal(out.codes, ref_codes)
        torch.testing.assert_close(out.z_q, ref_z, rtol=0, atol=1e-6)
        assert torch.equal(q.encode(z, n_q), ref_codes)
    # the first quantizer sees only the first third of the channels
    z2 = z.clone()
    z2[:, dim // 3 :] = torch.randn(2, dim - dim // 3, 8)
    assert torch.equal(q.encode(z2, 1), q.encode(z, 1))


def test_mask_channel_rvq_dropout_choices_and_stage_factory():
    made = []

    def stage(i):
        made.append(i)
        return VectorQuantize(12, 16)

    q = MaskChannelRVQ(12, n_codebooks=5, codebook_size=16, n_masked=2, stage=stage,
                       quantizer_dropout_choices=[2, 3, 5])
    assert made == [0, 1, 2, 3, 4]
    z = torch.randn(2, 12, 4)
    q.train()
    seen = {q(z).codes.shape[1] for _ in range(30)}
    assert seen <= {2, 3, 5} and len(seen) > 1
    q.eval()
    assert {q(z).codes.shape[1] for _ in range(5)} == {5}
    with pytest.raises(ValueError, match="n_quantizers"):
        MaskChannelRVQ(12, n_codebooks=4, quantizer_dropout_choices=[5])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", list(_quantizers()))
def test_bad_latents_and_codes(name):
    q = _quantizers()[name].eval()
    z = torch.randn(1, q.input_dim, 4)
    with pytest.raises(ValueError, match="latent channels"):
        q(torch.randn(1, q.input_dim + 1, 4))
    with pytest.raises(ValueError, match="latent"):
        q.encode(z[0])
    codes = q.encode(z)
    with pytest.raises(ValueError, match="out of range"):
        q.decode(codes + q.codebook_size)
    with pytest.raises(ValueError, match="out of range"):
        q.decode(codes - codes - 1)
    with pytest.raises(ValueError, match="integer"):
        q.decode(codes.float())
    with pytest.raises(ValueError, match="codebooks"):
        q.decode(torch.cat([codes, codes], 1))
    with pytest.raises(ValueError, match="n_quantizers"):
        q.encode(z, n_quantizers=q.n_codebooks + 1)
