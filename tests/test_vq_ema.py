"""EMA-codebook vector quantization (models/layers/vq_ema.py) against EnCodec's own
``encodec.quantization`` (the installed ``encodec`` package): same codes, same EMA update, same
k-means init for the same data and seed; dead-code restart; round trips; bad codes."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.models.layers.vq_ema import (
    EuclideanCodebook,
    ResidualVectorQuantization,
    ResidualVectorQuantizer,
    VectorQuantization,
)

core_vq = pytest.importorskip("encodec.quantization.core_vq")
enc_vq = pytest.importorskip("encodec.quantization.vq")


def _seeded_codebook_state(module: torch.nn.Module, seed: int, min_size: float = 3.0) -> dict:
    """A state dict for ``module`` with random codebooks and cluster sizes >= ``min_size``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if k.endswith("inited"):
            sd[k] = torch.ones_like(v)
        elif k.endswith("cluster_size"):
            sd[k] = min_size + 5 * torch.rand(v.shape, generator=g)
        elif k.endswith("embed"):
            sd[k] = torch.randn(v.shape, generator=g)
        elif k.endswith("embed_avg"):
            continue
        else:
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
    for k in list(sd):
        if k.endswith("embed"):
            sd[k + "_avg"] = sd[k] * sd[k[: -len("embed")] + "cluster_size"][:, None]
    return sd


def _load_both(ours, theirs, seed=0, min_size=3.0):
    sd = _seeded_codebook_state(theirs, seed, min_size)
    theirs.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    return sd


def test_state_dict_layout_equals_encodec():
    ours = ResidualVectorQuantizer(dimension=16, n_q=3, bins=64)
    theirs = enc_vq.ResidualVectorQuantizer(dimension=16, n_q=3, bins=64)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert "vq.layers.2._codebook.embed_avg" in a


def test_eval_codes_and_values_match_encodec():
    torch.manual_seed(0)
    ours = ResidualVectorQuantizer(dimension=16, n_q=4, bins=64).eval()
    theirs = enc_vq.ResidualVectorQuantizer(dimension=16, n_q=4, bins=64).eval()
    _load_both(ours, theirs)
    z = torch.randn(3, 16, 50)
    for n_q in (1, 2, 4):
        codes = ours.encode(z, n_q)
        ref = theirs.vq.encode(z, n_q=n_q)  # (n_q, B, T)
        assert codes.shape == (3, n_q, 50)
        assert torch.equal(codes, ref.transpose(0, 1))
        torch.testing.assert_close(ours.decode(codes), theirs.decode(ref), rtol=0, atol=1e-6)
        out = ours(z, n_q)
        assert torch.equal(out.codes, codes)
        torch.testing.assert_close(out.z_q, theirs.decode(ref), rtol=0, atol=1e-6)


def test_one_training_step_matches_encodec_ema():
    """Training mode, one step, the same data: same quantized output, commitment loss, and the
    same buffers after EnCodec's EMA update (no code is dead, so no restart happens)."""
    torch.manual_seed(0)
    ours = ResidualVectorQuantizer(dimension=16, n_q=3, bins=32, decay=0.9).train()
    theirs = enc_vq.ResidualVectorQuantizer(dimension=16, n_q=3, bins=32, decay=0.9).train()
    _load_both(ours, theirs, seed=1)
    z = torch.randn(2, 16, 40)
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = ours(za)
    ref = theirs(zb, sample_rate=75)
    assert torch.equal(out.codes, ref.codes.transpose(0, 1))
    torch.testing.assert_close(out.z_q, ref.quantized, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.commitment_loss, ref.penalty, rtol=1e-6, atol=1e-7)
    assert float(out.codebook_loss) == 0.0
    for (ka, a), (kb, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=ka)
    # the update really moved the codebooks
    before = _seeded_codebook_state(theirs, 1)
    assert not torch.allclose(ours.state_dict()["vq.layers.0._codebook.embed"], before["vq.layers.0._codebook.embed"])
    # straight-through: gradients reach the input in both
    (out.z_q.sum() + out.commitment_loss).backward()
    (ref.quantized.sum() + ref.penalty).backward()
    torch.testing.assert_close(za.grad, zb.grad, rtol=1e-5, atol=1e-6)


def test_kmeans_init_matches_encodec():
    """k-means init on the first training batch, same global seed: the same codebook."""
    ours = VectorQuantization(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=5, threshold_ema_dead_code=0)
    theirs = core_vq.VectorQuantization(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=5,
                                        threshold_ema_dead_code=0)
    assert float(ours._codebook.inited) == 0.0 and torch.count_nonzero(ours.codebook) == 0
    x = torch.randn(2, 8, 100)
    torch.manual_seed(7)
    out = ours.train()(x)
    torch.manual_seed(7)
    q_ref, codes_ref, _ = theirs.train()(x)
    assert float(ours._codebook.inited) == 1.0
    assert torch.equal(out.codes[:, 0], codes_ref)
    torch.testing.assert_close(out.z_q, q_ref, rtol=0, atol=1e-6)
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-6, atol=1e-6, msg=k)


def test_dead_code_restart_replaces_unused_codes():
    torch.manual_seed(0)
    cb = EuclideanCodebook(dim=4, codebook_size=8, decay=0.5, threshold_ema_dead_code=1.0)
    embed = torch.randn(8, 4)
    embed[4:] += 100.0  # codes 4..7 are far from the data: never chosen
    cb.embed.copy_(embed)
    cluster = torch.tensor([5.0, 5.0, 5.0, 5.0, 0.2, 0.2, 0.2, 5.0])  # 4, 5, 6 dead; 7 alive (unused)
    cb.cluster_size.copy_(cluster)
    cb.embed_avg.copy_(embed * cluster[:, None])
    x = torch.randn(64, 4)
    codes_before = cb.encode(x)
    assert int(codes_before.max()) < 4
    cb.train()(x)
    # the dead codes now sit exactly on batch vectors, with the threshold as their count
    for k in (4, 5, 6):
        assert (cb.embed[k] - x).abs().sum(1).min() == 0, k
        assert float(cb.cluster_size[k]) == 1.0
    # code 7 was unused but not dead: it keeps its EMA value, far away
    assert cb.embed[7].abs().min() > 50
    # a restarted code is chosen for its own sample, and survives the next EMA normalisation
    k4 = cb.embed[4].clone()
    assert int(cb.encode(k4[None])[0]) == 4
    cb.eval()
    assert torch.equal(cb.decode(torch.tensor([4])), k4[None])


def test_no_restart_when_threshold_zero():
    cb = EuclideanCodebook(dim=4, codebook_size=8, threshold_ema_dead_code=0)
    ref = core_vq.EuclideanCodebook(dim=4, codebook_size=8, threshold_ema_dead_code=0)
    cb.load_state_dict(ref.state_dict())  # cluster sizes 0: all "dead", but restart is off
    x = torch.randn(30, 4)
    q, codes = cb.train()(x)
    q_ref, codes_ref = ref.train()(x)
    assert torch.equal(codes, codes_ref) and torch.equal(q, q_ref)
    torch.testing.assert_close(cb.embed, ref.embed, rtol=1e-6, atol=1e-6)


def test_round_trips_and_projection():
    torch.manual_seed(0)
    vq = VectorQuantization(dim=12, codebook_size=32, codebook_dim=4, kmeans_init=False).eval()
    assert isinstance(vq.project_in, torch.nn.Linear) and vq.codebook.shape == (32, 4)
    z = torch.randn(2, 12, 20)
    codes = vq.encode(z)
    assert codes.shape == (2, 1, 20) and vq.n_codebooks == 1
    out = vq(z)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(vq.decode(codes), out.z_q)
    # a decoded codeword encodes back to itself (codebook space)
    cw = vq._codebook.decode(codes[:, 0])
    assert torch.equal(vq._codebook.encode(cw), codes[:, 0])

    rvq = ResidualVectorQuantization(num_quantizers=4, dim=8, codebook_size=16, kmeans_init=False).eval()
    z = torch.randn(2, 8, 30)
    codes = rvq.encode(z, 3)
    torch.testing.assert_close(rvq.decode(codes), rvq(z, 3).z_q)
    # more codebooks leave a smaller residual on average
    errs = [float((rvq.decode(rvq.encode(z, n)) - z).pow(2).mean()) for n in (1, 4)]
    assert errs[1] < errs[0]


def test_bandwidth_to_n_q_and_dropout():
    ours = ResidualVectorQuantizer(dimension=8, n_q=32, bins=1024)
    theirs = enc_vq.ResidualVectorQuantizer(dimension=8, n_q=32, bins=1024)
    for bw in (None, 0.0, 0.3, 1.5, 3.0, 6.0, 7.0, 12.0, 24.0):
        assert ours.n_quantizers_for_bandwidth(75, bw) == theirs.get_num_quantizers_for_bandwidth(75, bw)
    assert math.isclose(ours.bandwidth_per_quantizer(75), 0.75)
    ours = ResidualVectorQuantizer(dimension=8, n_q=32, bins=16, kmeans_init=False, quantizer_dropout=True,
                                   dropout_n_q=[2, 4, 8, 16, 32])
    z = torch.randn(1, 8, 5)
    ours.train()
    seen = {ours(z).codes.shape[1] for _ in range(40)}
    assert seen <= {2, 4, 8, 16, 32} and len(seen) > 1
    assert ours(z, 3).codes.shape[1] == 3  # an explicit number wins over dropout
    ours.eval()
    assert ours(z).codes.shape[1] == 32


def test_bad_codes_and_arguments():
    rvq = ResidualVectorQuantizer(dimension=8, n_q=4, bins=16, kmeans_init=False).eval()
    z = torch.randn(1, 8, 6)
    with pytest.raises(ValueError, match="n_quantizers must be in 1..4"):
        rvq.encode(z, 5)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        rvq.decode(torch.full((1, 2, 6), 16))
    with pytest.raises(ValueError, match="codebooks"):
        rvq.decode(torch.zeros(1, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        rvq.decode(torch.zeros(1, 2, 6))
    with pytest.raises(ValueError, match=r"\(B, n_q, T\)"):
        rvq.decode(torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="dropout_n_q"):
        ResidualVectorQuantizer(dimension=8, n_q=4, bins=16, dropout_n_q=[8])
