"""Channel-attention SR families: RCAN, HAN, SAFMN.

- RCAN and SAFMN: the same seeded upstream-layout state dict, loaded through our filter, gives
  the outputs of spandrel's implementations to 1e-5 (RCAN: small nets at every scale plus the
  full-size x4; SAFMN: the authors' size at every scale, plus another width), and the full-size
  parameter counts agree;
- HAN (no other implementation exists): the state-dict keys are exactly those of the authors'
  ``src/model/han.py``, and LAM / CSAM / the whole forward match an independent re-computation;
- a file of another scale, width or architecture is refused with a ``CheckpointError`` naming the
  keys that tell them apart;
- the shipped training configs parse.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.hub import CheckpointError, apply_state_dict
from zoo.models.han import CSAM, HAN, LAM
from zoo.registry import get_entry
from zoo.weights.filters_ca_sr import filter_rcan

spandrel_rcan = pytest.importorskip("spandrel.architectures.RCAN")
spandrel_safmn = pytest.importorskip("spandrel.architectures.SAFMN")

SMALL = dict(n_resgroups=2, n_resblocks=2, n_feats=32)  # reduction 16 -> 2 CA channels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets run on tiny inputs, where two OpenMP threads only add synchronisation (and,
    on a loaded 2-core machine, wait for each other's time slices: 10-30x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def seeded_state_dict(ref: torch.nn.Module, seed: int = 1, std: float = 0.05) -> dict[str, torch.Tensor]:
    """Random weights for every float tensor of ``ref`` (upstream layout), except the MeanShift
    convs, which keep their DIV2K values so that the 0-255 arithmetic stays realistic."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in ref.state_dict().items():
        if k.startswith(("sub_mean.", "add_mean.")) or not v.is_floating_point():
            out[k] = v.clone()
        else:
            out[k] = torch.randn(v.shape, generator=g) * std
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def load_via_file(name: str, sd: dict, tmp_path, wrap: str | None = None, **model_args) -> torch.nn.Module:
    f = tmp_path / f"{name}.pth"
    torch.save({wrap: sd} if wrap else sd, f)
    return zoo.create(name, checkpoint_path=f, **model_args).eval()


# ----------------------------------------------------------------------------------------- RCAN


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rcan_matches_spandrel_small(scale, tmp_path):
    ref = spandrel_rcan.RCAN(scale=scale, **SMALL, reduction=16).eval()
    sd = seeded_state_dict(ref)
    ref.load_state_dict(sd)
    ours = load_via_file(f"rcan_x{scale}", sd, tmp_path, **SMALL)
    assert list(ours.state_dict()) == list(ref.state_dict())  # the authors' names and order
    x = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = ours(x)
        b = ref(x.clone())  # spandrel's RCAN scales its input in place
    assert a.shape == (2, 3, 20 * scale, 28 * scale)
    assert rel_err(a, b) < 1e-5


def test_rcan_x4_full_size_matches_spandrel():
    ref = spandrel_rcan.RCAN(scale=4).eval()  # 10 groups x 20 RCABs, 64 channels
    assert sum(p.numel() for p in ref.parameters()) == get_entry("rcan_x4").params == 15_592_379
    sd = seeded_state_dict(ref, std=0.02)
    ref.load_state_dict(sd)
    ours = zoo.create("rcan_x4").eval()
    apply_state_dict(ours, filter_rcan(sd, ours), "rcan_x4")  # what checkpoint_path= does, minus the disk
    assert sum(p.numel() for p in ours.parameters()) == 15_592_379
    x = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(ours(x), ref(x.clone())) < 1e-5


def test_rcan_meanshift_is_frozen_edsr_meanshift():
    m = zoo.create("rcan_x2", n_resgroups=1, n_resblocks=1)
    assert not m.sub_mean.weight.requires_grad and not m.add_mean.bias.requires_grad
    assert torch.equal(m.sub_mean.weight.flatten(1), torch.eye(3))
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    assert torch.allclose(m.sub_mean.bias, -255 * mean) and torch.allclose(m.add_mean.bias, 255 * mean)
    assert m.rgb_range == 255 and m.scale == 2


# ---------------------------------------------------------------------------------------- SAFMN


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_safmn_matches_spandrel(scale, tmp_path):
    # the authors' configuration (dim 36, 8 blocks) is already small; BasicSR files wrap 'params'
    ref = spandrel_safmn.SAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=scale).eval()
    assert sum(p.numel() for p in ref.parameters()) == get_entry(f"safmn_x{scale}").params
    sd = seeded_state_dict(ref, seed=scale, std=0.1)
    ref.load_state_dict(sd)
    ours = load_via_file(f"safmn_x{scale}", sd, tmp_path, wrap="params")
    assert set(ours.state_dict()) == set(ref.state_dict())
    g = torch.Generator().manual_seed(4)
    for hw in ((32, 32), (27, 41)):  # a multiple of 8, and not (inexact adaptive pooling)
        x = torch.rand(1, 3, *hw, generator=g)
        with torch.no_grad():
            a, b = ours(x), ref(x.clone())
        assert a.shape == (1, 3, hw[0] * scale, hw[1] * scale)
        assert rel_err(a, b) < 1e-5


def test_safmn_other_width_matches_spandrel(tmp_path):
    ref = spandrel_safmn.SAFMN(dim=16, n_blocks=2, ffn_scale=3.0, upscaling_factor=4).eval()
    sd = seeded_state_dict(ref, std=0.1)
    ref.load_state_dict(sd)
    ours = load_via_file("safmn_x4", sd, tmp_path, dim=16, n_blocks=2, ffn_scale=3.0)
    x = torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) < 1e-5


def test_safmn_needs_sides_of_8():
    m = zoo.create("safmn_x4").eval()
    with pytest.raises(ValueError, match="at least 8"):
        m(torch.rand(1, 3, 7, 16))
    with torch.no_grad():
        assert m(torch.rand(1, 3, 8, 9)).shape == (1, 3, 32, 36)


# ------------------------------------------------------------------------------------------ HAN


def han_upstream_keys(n_resgroups: int = 10, n_resblocks: int = 20, scale: int = 4) -> set[str]:
    """The state-dict keys of the authors' HAN (wwlCape/HAN src/model/han.py), written out from
    their module structure: MeanShift convs, head.0, body.G.body.B (RCAB: body.0 conv, body.1
    ReLU, body.2 conv, body.3 CALayer with conv_du.{0,2}), body.G.body.N (conv), body.10 (conv),
    csa (conv3d + gamma), la (gamma), last_conv, last, tail.0 (EDSR upsampler), tail.1."""
    wb = ("weight", "bias")
    keys = {f"{m}.{p}" for m in ("sub_mean", "add_mean", "head.0", "csa.conv", "last_conv", "last", "tail.1") for p in wb}
    keys |= {"csa.gamma", "la.gamma"}
    for g, b in itertools.product(range(n_resgroups), range(n_resblocks)):
        for m in ("body.0", "body.2", "body.3.conv_du.0", "body.3.conv_du.2"):
            keys |= {f"body.{g}.body.{b}.{m}.{p}" for p in wb}
    keys |= {f"body.{g}.body.{n_resblocks}.{p}" for g in range(n_resgroups) for p in wb}
    keys |= {f"body.{n_resgroups}.{p}" for p in wb}
    ups = [0] if scale in (2, 3) else [0, 2]
    keys |= {f"tail.0.{i}.{p}" for i in ups for p in wb}
    return keys


def test_han_keys_are_the_authors():
    m = zoo.create("han_x4")
    sd = m.state_dict()
    assert set(sd) == han_upstream_keys()
    assert tuple(sd["last_conv.weight"].shape) == (64, 64 * 11, 3, 3)
    assert tuple(sd["last.weight"].shape) == (64, 128, 3, 3)
    assert tuple(sd["csa.conv.weight"].shape) == (1, 1, 3, 3, 3)
    assert tuple(sd["body.3.body.7.body.3.conv_du.0.weight"].shape) == (4, 64, 1, 1)
    assert m.la.gamma.item() == 0.0 and m.csa.gamma.item() == 0.0  # upstream initialisation
    assert set(zoo.create("han_x3", n_resgroups=2, n_resblocks=1).state_dict()) == han_upstream_keys(2, 1, 3)


def lam_reference(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Layer attention written out per pair of layers, in float64."""
    b, n, c, h, w = x.shape
    out = torch.empty_like(x, dtype=torch.float64)
    for bi in range(b):
        f = [x[bi, i].double().flatten() for i in range(n)]
        energy = torch.tensor([[float(f[i] @ f[j]) for j in range(n)] for i in range(n)], dtype=torch.float64)
        for i in range(n):
            e = energy[i].max() - energy[i]
            a = torch.exp(e - e.max())
            a = a / a.sum()
            out[bi, i] = gamma * sum(a[j] * f[j] for j in range(n)).view(c, h, w) + x[bi, i].double()
    return out.reshape(b, n * c, h, w)


def csam_reference(x: torch.Tensor, weight: torch.Tensor, bias: float, gamma: float) -> torch.Tensor:
    """CSAM written out: the 3x3x3 conv over (C, H, W) as 27 shifted products, in float64."""
    xd = x.double()
    padded = F.pad(xd, (1, 1, 1, 1, 1, 1))  # zero padding of C, H and W
    _, c, h, w = x.shape
    conv = torch.full_like(xd, bias)
    for dc, dh, dw in itertools.product(range(3), repeat=3):
        conv += float(weight[dc, dh, dw]) * padded[:, dc : dc + c, dh : dh + h, dw : dw + w]
    return xd * (gamma * torch.sigmoid(conv)) + xd


def test_lam_matches_reference():
    g = torch.Generator().manual_seed(6)
    lam = LAM(8)
    with torch.no_grad():
        lam.gamma.fill_(0.7)
    x = torch.randn(2, 5, 8, 3, 4, generator=g) * 0.3
    with torch.no_grad():
        out = lam(x)
    assert out.shape == (2, 40, 3, 4)
    ref = lam_reference(x, 0.7)
    assert rel_err(out.double(), ref) < 1e-5
    with torch.no_grad():  # gamma 0 (the initialisation): a plain reshape of the stacked layers
        lam.gamma.zero_()
        assert torch.equal(lam(x), x.reshape(2, 40, 3, 4))


def test_csam_matches_reference():
    g = torch.Generator().manual_seed(7)
    csam = CSAM(6)
    with torch.no_grad():
        csam.conv.weight.copy_(torch.randn(1, 1, 3, 3, 3, generator=g))
        csam.conv.bias.fill_(0.1)
        csam.gamma.fill_(1.3)
    x = torch.randn(2, 6, 5, 7, generator=g)
    with torch.no_grad():
        out = csam(x)
    ref = csam_reference(x, csam.conv.weight.detach()[0, 0], 0.1, 1.3)
    assert rel_err(out.double(), ref) < 1e-5


def test_han_forward_matches_reference():
    """The whole forward of a small HAN against the upstream data flow written out: body outputs
    stacked newest first into LAM, CSAM on the last one, ``last`` + the head's skip, tail."""
    torch.manual_seed(8)
    m: HAN = zoo.create("han_x2", n_resgroups=3, n_resblocks=1, n_feats=16).eval()
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.startswith(("sub_mean", "add_mean")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        m.la.gamma.fill_(0.4)
        m.csa.gamma.fill_(0.9)
    x = torch.rand(1, 3, 10, 12, generator=g)
    with torch.no_grad():
        y = m(x)
        t = x * 255
        t = F.conv2d(t, m.sub_mean.weight, m.sub_mean.bias)
        head = F.conv2d(t, m.head[0].weight, m.head[0].bias, padding=1)
        feats, res = [], head
        for layer in m.body:
            res = layer(res)
            feats.insert(0, res)  # newest first
        la = lam_reference(torch.stack(feats, 1), 0.4).float()
        out2 = F.conv2d(la, m.last_conv.weight, m.last_conv.bias, padding=1)
        out1 = csam_reference(res, m.csa.conv.weight.detach()[0, 0], m.csa.conv.bias.item(), 0.9).float()
        fused = F.conv2d(torch.cat([out1, out2], 1), m.last.weight, m.last.bias, padding=1) + head
        up = F.pixel_shuffle(F.conv2d(fused, m.tail[0][0].weight, m.tail[0][0].bias, padding=1), 2)
        out = F.conv2d(up, m.tail[1].weight, m.tail[1].bias, padding=1)
        ref = F.conv2d(out, m.add_mean.weight, m.add_mean.bias) / 255
    assert y.shape == (1, 3, 20, 24)
    assert rel_err(y, ref) < 1e-5


def test_han_round_trip_through_filter(tmp_path):
    m = zoo.create("han_x4", n_resgroups=2, n_resblocks=1).eval()
    with torch.no_grad():
        m.la.gamma.fill_(0.5)
        m.csa.gamma.fill_(0.5)
    m2 = load_via_file("han_x4", m.state_dict(), tmp_path, n_resgroups=2, n_resblocks=1)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


# --------------------------------------------------------------------------- wrong checkpoints


def test_rcan_x2_file_into_rcan_x4_names_the_tail(tmp_path):
    x2 = zoo.create("rcan_x2", n_resgroups=1, n_resblocks=1)
    f = tmp_path / "RCAN_BIX2.pt"
    torch.save(x2.state_dict(), f)
    with pytest.raises(CheckpointError, match=r"tail\.0\.0\.weight.*rcan_x2") as e:
        zoo.create("rcan_x4", checkpoint_path=f, n_resgroups=1, n_resblocks=1)
    assert "tail.0.2.weight" in str(e.value) and "x2" in str(e.value)
    x3 = zoo.create("rcan_x3", n_resgroups=1, n_resblocks=1)
    torch.save(x3.state_dict(), f)
    with pytest.raises(CheckpointError, match=r"x3 .*\(576, 64, 3, 3\).*create rcan_x3"):
        zoo.create("rcan_x4", checkpoint_path=f, n_resgroups=1, n_resblocks=1)


def test_rcan_and_han_files_are_told_apart(tmp_path):
    args = dict(n_resgroups=1, n_resblocks=1)
    f = tmp_path / "w.pt"
    torch.save(zoo.create("han_x4", **args).state_dict(), f)
    with pytest.raises(CheckpointError, match="HAN checkpoint.*han_x4"):
        zoo.create("rcan_x4", checkpoint_path=f, **args)
    torch.save(zoo.create("rcan_x4", **args).state_dict(), f)
    with pytest.raises(CheckpointError, match="RCAN checkpoint.*rcan_x4"):
        zoo.create("han_x4", checkpoint_path=f, **args)
    torch.save(zoo.create("rcan_x4", n_resgroups=2, n_resblocks=1).state_dict(), f)  # other depth
    with pytest.raises(CheckpointError, match="n_resgroups=2, n_resblocks=1, n_feats=64.*create it with n_resgroups=2$"):
        zoo.create("rcan_x4", checkpoint_path=f, **args)
    torch.save(zoo.create("rlfn_x4").state_dict(), f)  # another family altogether
    with pytest.raises(CheckpointError, match="not an RCAN checkpoint"):
        zoo.create("rcan_x4", checkpoint_path=f, **args)


def test_safmn_wrong_variant_is_named(tmp_path):
    f = tmp_path / "w.pth"
    torch.save({"params": zoo.create("safmn_x2").state_dict()}, f)
    with pytest.raises(CheckpointError, match=r"x2 \(.*to_img\.0\.weight \(12, 36, 3, 3\).*create safmn_x2$"):
        zoo.create("safmn_x4", checkpoint_path=f)
    torch.save({"params": zoo.create("safmn_x4", dim=16, n_blocks=2).state_dict()}, f)  # a SAFMN-L-like file
    with pytest.raises(CheckpointError, match="create safmn_x4 with dim=16, n_blocks=2"):
        zoo.create("safmn_x4", checkpoint_path=f)
    torch.save(zoo.create("rcan_x4", n_resgroups=1, n_resblocks=1).state_dict(), f)
    with pytest.raises(CheckpointError, match="not a SAFMN checkpoint"):
        zoo.create("safmn_x4", checkpoint_path=f)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="power of two"):
        zoo.create("rcan_x4", scale=5)
    with pytest.raises(ValueError, match="multiple of n_levels"):
        zoo.create("safmn_x4", dim=30)


# ------------------------------------------------------------------------------- cards, configs


def test_cards():
    for name in ("rcan_x2", "rcan_x3", "rcan_x4", "han_x2", "han_x3", "han_x4", "safmn_x2", "safmn_x3", "safmn_x4"):
        card = zoo.info(name)
        assert card["task"] == "sr" and card["input_range"] == [0.0, 1.0]
        for cfg in card["pretrained"].values():
            assert cfg["verified"] is False and cfg["sha256"] is None
    assert zoo.info("rcan_x4")["pretrained"]["paper"]["metrics"]["set5_x4_psnr_y"] == 32.634
    assert "Meloo/SAFMN" == zoo.info("safmn_x4")["pretrained"]["df2k"]["hf_hub_id"]


@pytest.mark.parametrize(
    "name, lr, sched, batch, patch",
    [("rcan_x4", 1e-4, "step", 16, 48), ("han_x4", 1e-4, "step", 16, 48), ("safmn_x4", 1e-3, "cosine", 64, 64)],
)
def test_shipped_configs_parse(name, lr, sched, batch, patch, capsys):
    import yaml

    from zoo.tasks.cli import train_main

    assert train_main("sr", ["-c", f"sr/{name}.yaml", "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model"] == name and cfg["model"]["lr"] == lr and cfg["model"]["scheduler"] == sched
    assert cfg["data"]["batch_size"] == batch and cfg["data"]["patch_size"] == patch and cfg["data"]["scale"] == 4
