"""LSNet (THU-MIG/lsnet): the authors' state-dict layout and parameter counts, their checkpoint
wrappers through the filter, a functional re-implementation of their forward, the attention
bias table, BN fusion, distillation head and features.

No LSNet golden exists in the test data, so the layout of the authors' ``model/lsnet.py`` is
written out here independently of ``zoo.models.lsnet`` (:func:`authors_layout`), and the
authors' forward is re-implemented with functional ops reading that layout
(:func:`functional_lsnet`), SKA included (an explicit shifted sum, not the op).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError
from zoo.models.lsnet import LSNet, attention_bias_index
from zoo.registry import get_entry

# the authors' factories (model/lsnet.py): embed_dim, depth; num_heads (3, 3, 3, 4), key_dim 16
VARIANTS = {
    "lsnet_t": ((64, 128, 256, 384), (0, 2, 8, 10)),
    "lsnet_s": ((96, 192, 320, 448), (1, 2, 8, 10)),
    "lsnet_b": ((128, 256, 384, 512), (4, 6, 8, 10)),
}
HEADS = (3, 3, 3, 4)
KEY_DIM = 16
# a small configuration for the forward checks: 128 px gives 16/8/4/2 maps, the attention table is 2 x 2
SMALL = dict(img_size=128, embed_dim=(32, 48, 64, 96), depth=(2, 2, 2, 2), num_heads=(2, 2, 2, 3), key_dim=(8, 8, 8, 16))

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "attention_bias_idxs")


# -- the authors' layout, written from their model/lsnet.py --------------------------------


def _conv_bn(p: str, a: int, b: int, ks: int = 1, groups: int = 1) -> dict[str, tuple]:
    return {
        f"{p}.c.weight": (b, a // groups, ks, ks),
        f"{p}.bn.weight": (b,),
        f"{p}.bn.bias": (b,),
        f"{p}.bn.running_mean": (b,),
        f"{p}.bn.running_var": (b,),
        f"{p}.bn.num_batches_tracked": (),
    }


def _se_width(ch: int) -> int:  # timm SqueezeExcite(ch, 0.25): make_divisible(ch / 4, 8, round_limit=0)
    return max(8, int(ch * 0.25 + 4) // 8 * 8)


def authors_layout(
    embed_dim, depth, num_heads=HEADS, key_dim=None, img_size=224, patch_size=8, num_classes=1000, distillation=False
) -> dict[str, tuple]:
    """Key -> shape of the authors' ``LSNet(...)`` state dict."""
    key_dim = key_dim or (KEY_DIM,) * 4
    e = embed_dim
    sd: dict[str, tuple] = {}
    sd.update(_conv_bn("patch_embed.0", 3, e[0] // 4, 3))
    sd.update(_conv_bn("patch_embed.2", e[0] // 4, e[0] // 2, 3))
    sd.update(_conv_bn("patch_embed.4", e[0] // 2, e[0], 3))
    res = img_size // patch_size
    for i in range(4):
        if i > 0:
            sd.update(_conv_bn(f"blocks{i + 1}.0", e[i - 1], e[i - 1], 3, groups=e[i - 1]))
            sd.update(_conv_bn(f"blocks{i + 1}.1", e[i - 1], e[i], 1))
            res = (res - 1) // 2 + 1
        start = 2 if i > 0 else 0
        ed = e[i]
        for d in range(depth[i]):
            p = f"blocks{i + 1}.{start + d}"
            if d % 2 == 0:
                sd.update(_conv_bn(f"{p}.mixer.conv", ed, ed, 3, groups=ed))
                sd.update(_conv_bn(f"{p}.mixer.conv1", ed, ed, 1, groups=ed))
                rd = _se_width(ed)
                sd.update({f"{p}.se.fc1.weight": (rd, ed, 1, 1), f"{p}.se.fc1.bias": (rd,),
                           f"{p}.se.fc2.weight": (ed, rd, 1, 1), f"{p}.se.fc2.bias": (ed,)})  # fmt: skip
            elif i == 3:
                nh, kd = num_heads[i], key_dim[i]
                dh = int(ed / (kd * nh) * kd) * nh
                a = f"{p}.mixer.m"
                sd[f"{a}.attention_biases"] = (nh, res * res)
                sd[f"{a}.attention_bias_idxs"] = (res * res, res * res)
                sd.update(_conv_bn(f"{a}.qkv", ed, dh + 2 * nh * kd, 1))
                sd.update(_conv_bn(f"{a}.proj.1", dh, ed, 1))
                sd.update(_conv_bn(f"{a}.dw", nh * kd, nh * kd, 3, groups=nh * kd))
            else:
                k = f"{p}.mixer.lkp"
                sd.update(_conv_bn(f"{k}.cv1", ed, ed // 2, 1))
                sd.update(_conv_bn(f"{k}.cv2", ed // 2, ed // 2, 7, groups=ed // 2))
                sd.update(_conv_bn(f"{k}.cv3", ed // 2, ed // 2, 1))
                sd.update({f"{k}.cv4.weight": (9 * ed // 8, ed // 2, 1, 1), f"{k}.cv4.bias": (9 * ed // 8,),
                           f"{k}.norm.weight": (9 * ed // 8,), f"{k}.norm.bias": (9 * ed // 8,)})  # fmt: skip
                sd.update({f"{p}.mixer.bn.{n}": (ed,) for n in ("weight", "bias", "running_mean", "running_var")})
                sd[f"{p}.mixer.bn.num_batches_tracked"] = ()
            sd.update(_conv_bn(f"{p}.ffn.m.pw1", ed, 2 * ed, 1))
            sd.update(_conv_bn(f"{p}.ffn.m.pw2", 2 * ed, ed, 1))
    for head in ("head", "head_dist") if distillation else ("head",):
        sd.update({f"{head}.bn.{n}": (e[3],) for n in ("weight", "bias", "running_mean", "running_var")})
        sd[f"{head}.bn.num_batches_tracked"] = ()
        sd.update({f"{head}.l.weight": (num_classes, e[3]), f"{head}.l.bias": (num_classes,)})
    return sd


def authors_bias_idxs(resolution: int) -> torch.Tensor:
    """The authors' enumeration: offsets numbered in the order they are first met."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return torch.tensor(idxs).view(len(points), len(points))


def random_state_dict(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Values for an authors'-layout state dict: random weights, positive variances, non-trivial
    norms (so that residual branches, zero-initialised in training, contribute)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000)
        elif k.endswith("attention_bias_idxs"):
            sd[k] = authors_bias_idxs(math.isqrt(shape[0]))
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(shape, generator=g)
        elif k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif k.endswith(("bn.weight", "norm.weight")):
            sd[k] = 0.6 + 0.4 * torch.rand(shape, generator=g)
        elif k.endswith("weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
    return sd


# -- the authors' forward, functional ------------------------------------------------------


def _cbn(sd, p, x, stride=1, pad=0, groups=1):
    x = F.conv2d(x, sd[f"{p}.c.weight"], None, stride, pad, 1, groups)
    return F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"], sd[f"{p}.bn.bias"])


def _ska_shifts(x, w):
    """out[:, c] = sum over the 3x3 taps of the zero-padded x times the kernel of group c % G."""
    c, h, wd = x.shape[1:]
    xp = F.pad(x, (1, 1, 1, 1))
    group = torch.arange(c) % w.shape[1]
    return sum(xp[:, :, a : a + h, b : b + wd] * w[:, group, a * 3 + b] for a in range(3) for b in range(3))


def _bn1d(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])


def functional_lsnet(sd, x, embed_dim, depth, num_heads=HEADS, key_dim=None, distillation=False):
    key_dim = key_dim or (KEY_DIM,) * 4
    x = F.relu(_cbn(sd, "patch_embed.0", x, 2, 1))
    x = F.relu(_cbn(sd, "patch_embed.2", x, 2, 1))
    x = _cbn(sd, "patch_embed.4", x, 2, 1)
    for i in range(4):
        ed = embed_dim[i]
        if i > 0:
            x = _cbn(sd, f"blocks{i + 1}.0", x, 2, 1, groups=embed_dim[i - 1])
            x = _cbn(sd, f"blocks{i + 1}.1", x)
        start = 2 if i > 0 else 0
        for d in range(depth[i]):
            p = f"blocks{i + 1}.{start + d}"
            if d % 2 == 0:  # RepVGGDW, then squeeze-excite
                x = _cbn(sd, f"{p}.mixer.conv", x, 1, 1, groups=ed) + _cbn(sd, f"{p}.mixer.conv1", x, groups=ed) + x
                s = x.mean((2, 3), keepdim=True)
                s = F.relu(F.conv2d(s, sd[f"{p}.se.fc1.weight"], sd[f"{p}.se.fc1.bias"]))
                x = x * torch.sigmoid(F.conv2d(s, sd[f"{p}.se.fc2.weight"], sd[f"{p}.se.fc2.bias"]))
            elif i == 3:  # attention with the authors' fixed bias index
                a = f"{p}.mixer.m"
                nh, kd = num_heads[i], key_dim[i]
                B, _, H, W = x.shape
                qkv = _cbn(sd, f"{a}.qkv", x)
                q, k, v = qkv.split([nh * kd, nh * kd, qkv.shape[1] - 2 * nh * kd], dim=1)
                q = _cbn(sd, f"{a}.dw", q, 1, 1, groups=nh * kd)
                q, k, v = (t.reshape(B, nh, -1, H * W) for t in (q, k, v))
                bias = sd[f"{a}.attention_biases"][:, sd[f"{a}.attention_bias_idxs"]]
                attn = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) * kd**-0.5 + bias, dim=-1)
                y = torch.einsum("bhdj,bhij->bhdi", v, attn).reshape(B, -1, H, W)
                x = x + _cbn(sd, f"{a}.proj.1", F.relu(y))
            else:  # LS convolution
                k = f"{p}.mixer.lkp"
                y = F.relu(_cbn(sd, f"{k}.cv1", x))
                y = F.relu(_cbn(sd, f"{k}.cv3", _cbn(sd, f"{k}.cv2", y, 1, 3, groups=ed // 2)))
                wt = F.conv2d(y, sd[f"{k}.cv4.weight"], sd[f"{k}.cv4.bias"])
                wt = F.group_norm(wt, ed // 8, sd[f"{k}.norm.weight"], sd[f"{k}.norm.bias"])
                wt = wt.reshape(x.shape[0], ed // 8, 9, *x.shape[2:])
                x = _bn1d(sd, f"{p}.mixer.bn", _ska_shifts(x, wt)) + x
            x = x + _cbn(sd, f"{p}.ffn.m.pw2", F.relu(_cbn(sd, f"{p}.ffn.m.pw1", x)))
    x = x.mean((2, 3))
    out = F.linear(_bn1d(sd, "head.bn", x), sd["head.l.weight"], sd["head.l.bias"])
    if distillation:
        out = (out + F.linear(_bn1d(sd, "head_dist.bn", x), sd["head_dist.l.weight"], sd["head_dist.l.bias"])) / 2
    return out


# -- layout and parameter counts -----------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("distillation", [False, True], ids=["plain", "distill"])
def test_state_dict_is_the_authors_layout(name, distillation):
    embed, depth = VARIANTS[name]
    model = zoo.create(name, distillation=distillation)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = authors_layout(embed, depth, distillation=distillation)
    assert sorted(set(ours) ^ set(theirs)) == []
    assert ours == theirs
    n_params = sum(math.prod(s) for k, s in theirs.items() if not k.endswith(_BUFFERS))
    assert count_params(model) == n_params
    if not distillation:
        assert get_entry(name).params == n_params


@pytest.mark.parametrize(
    "name, readme",
    [("lsnet_t", "11.4M"), ("lsnet_s", "16.1M"), ("lsnet_b", "23.2M")],
)
def test_params_match_the_readme(name, readme):
    """The README's counts are those of the BN-fused network (the authors fuse before
    benchmarking): LSNet-B is 23.31M as trained, 23.25M fused; T and S round the same either way."""
    model = zoo.create(name).eval()
    fused = count_params(zoo.optimize(model))
    assert f"{fused / 1e6:.1f}M" == readme
    assert count_params(model) == get_entry(name).params
    if name != "lsnet_b":
        assert f"{count_params(model) / 1e6:.1f}M" == readme


def test_attention_bias_index():
    # the authors' enumeration at the native resolution (4 x 4 for 224 px in stage 4) ...
    for r in (1, 2, 4, 7):
        assert torch.equal(attention_bias_index(r, r, r), authors_bias_idxs(r))
    # ... and the same offsets looked up for other map sizes, clamped to the table
    r = 4
    for h, w in ((2, 3), (1, 1), (6, 5)):
        idx = attention_bias_index(h, w, r)
        assert idx.shape == (h * w, h * w)
        for i, j in itertools.product(range(h * w), repeat=2):
            dy, dx = abs(i // w - j // w), abs(i % w - j % w)
            assert idx[i, j] == min(dy, r - 1) * r + min(dx, r - 1)
    model = zoo.create("lsnet_t")
    buf = model.blocks4[3].mixer.m.attention_bias_idxs
    assert torch.equal(buf, authors_bias_idxs(4))


# -- the authors' checkpoints through the filter -------------------------------------------


def _small(distillation=False, seed=0):
    layout = authors_layout(SMALL["embed_dim"], SMALL["depth"], SMALL["num_heads"], SMALL["key_dim"],
                            img_size=SMALL["img_size"], distillation=distillation)  # fmt: skip
    return layout, random_state_dict(layout, seed)


@pytest.mark.parametrize("distillation", [False, True], ids=["plain", "distill"])
def test_forward_matches_functional_authors_forward(distillation):
    """Every block type (RepVGGDW + SE, LS convolution, attention), the downsamplings and the
    (distillation) head, with random weights in the authors' layout, against the functional
    re-implementation of their forward."""
    _, sd = _small(distillation)
    model = LSNet(**SMALL, distillation=distillation).eval()
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        ref = functional_lsnet(sd, x, SMALL["embed_dim"], SMALL["depth"], SMALL["num_heads"], SMALL["key_dim"],
                               distillation=distillation)  # fmt: skip
    assert out.shape == (2, 1000)
    err = float((out - ref).abs().max() / ref.abs().max())
    assert ref.abs().max() > 1e-2 and err < 1e-5, err  # measured ~3e-7


def test_upstream_checkpoint_loads_through_the_filter(tmp_path):
    """lsnet_t: an authors'-layout file (random values, the trainer's wrapper) loads with every
    key consumed and gives the model the file's values."""
    embed, depth = VARIANTS["lsnet_t"]
    layout = authors_layout(embed, depth)
    sd = random_state_dict(layout, seed=3)
    ref_model = zoo.create("lsnet_t").eval()
    ref_model.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ref_model(x)
    ema = {k: torch.zeros_like(v) for k, v in list(sd.items())[:8]}  # another copy beside "model"
    trainer = {"model": sd, "model_ema": ema, "epoch": 299}
    no_idx = {f"module.{k}": v for k, v in sd.items() if not k.endswith("attention_bias_idxs")}
    files = {
        "trainer.pth": trainer,  # the authors' main.py checkpoint (model + model_ema)
        "ddp_no_idx.pth": {"state_dict": no_idx},  # DDP prefix, bias index buffers dropped
        "compiled.pth": {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    }
    for fname, obj in files.items():
        torch.save(obj, tmp_path / fname)
        model = zoo.create("lsnet_t", checkpoint_path=tmp_path / fname).eval()
        loaded = model.state_dict()
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k].to(loaded[k].dtype)) for k in sd), fname
        if fname == "trainer.pth":
            with torch.no_grad():
                assert torch.equal(model(x), ref)


def test_distilled_checkpoint_needs_the_distill_tag(tmp_path):
    embed, depth = VARIANTS["lsnet_t"]
    sd = random_state_dict(authors_layout(embed, depth, distillation=True), seed=4)
    torch.save({"model": sd}, tmp_path / "lsnet_t_distill.pth")
    model = zoo.create("lsnet_t.in1k_distill", checkpoint_path=tmp_path / "lsnet_t_distill.pth").eval()
    assert model.distillation and model.pretrained_cfg["tag"] == "in1k_distill"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        both = (model.head(feats) + model.head_dist(feats)) / 2
        torch.testing.assert_close(model(x), both, rtol=1e-6, atol=1e-6)
    with pytest.raises(CheckpointError, match="distillation=True"):
        zoo.create("lsnet_t", checkpoint_path=tmp_path / "lsnet_t_distill.pth")
    plain = random_state_dict(authors_layout(embed, depth), seed=5)
    torch.save({"model": plain}, tmp_path / "lsnet_t.pth")
    with pytest.raises(CheckpointError, match="no distillation head"):
        zoo.create("lsnet_t.in1k_distill", checkpoint_path=tmp_path / "lsnet_t.pth")


def test_foreign_or_other_variant_checkpoint_is_refused(tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(4, 3, 3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an LSNet state dict"):
        zoo.create("lsnet_t", checkpoint_path=tmp_path / "other.pth")
    embed, depth = VARIANTS["lsnet_s"]
    torch.save({"model": random_state_dict(authors_layout(embed, depth))}, tmp_path / "lsnet_s.pth")
    with pytest.raises(CheckpointError, match="does not fit architecture 'lsnet_t'"):
        zoo.create("lsnet_t", checkpoint_path=tmp_path / "lsnet_s.pth")


def test_pretrained_cfgs():
    entry = get_entry("lsnet_s")
    assert sorted(entry.pretrained_cfgs) == ["in1k", "in1k_distill"]
    plain, dist = entry.pretrained_cfgs["in1k"], entry.pretrained_cfgs["in1k_distill"]
    assert plain.metrics == {"imagenet_top1": 77.8} and dist.metrics == {"imagenet_top1": 79.0}
    assert (plain.hf_hub_id, plain.hf_filename) == ("jameslahm/lsnet", "lsnet_s.pth")
    assert dist.hf_filename == "lsnet_s_distill.pth" and dist.model_args == {"distillation": True}
    assert not plain.verified and plain.sha256 is None
    card = zoo.info("lsnet_b")
    assert card["data_cfg"]["interpolation"] == "bicubic" and card["data_cfg"]["crop_pct"] == 0.875


# -- fusion, distillation, features, input sizes -------------------------------------------


def _randomised(name="lsnet_s", seed=7):
    embed, depth = VARIANTS[name]
    model = zoo.create(name).eval()
    model.load_state_dict(random_state_dict(authors_layout(embed, depth), seed=seed))
    return model


def test_fused_deploy_form_matches():
    _, sd = _small()
    model = LSNet(**SMALL).eval()
    model.load_state_dict(sd)
    fused = zoo.optimize(model)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
    assert count_params(fused) < count_params(model)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, out = model(x), fused(x)
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err < 1e-5, err


def test_distilled_training_returns_both_heads():
    model = zoo.create("lsnet_t", distillation=True).train()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 1000)  # averaged unless asked for the pair
    model.set_distilled_training(True)
    out, out_dist = model(x)
    assert out.shape == out_dist.shape == (2, 1000)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1000)


def test_features_and_stage_strides():
    """lsnet_t has no stage-1 blocks: its first feature is the patch embedding's output."""
    model = _randomised("lsnet_t")
    feats = zoo.create("lsnet_t", features_only=True).eval()
    result = feats.model.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        outs = feats(x)
        stem = model.patch_embed(x)
    assert feats.feature_info.reduction() == [8, 16, 32, 64]
    assert [o.shape[1:] for o in outs] == [(64, 12, 16), (128, 6, 8), (256, 3, 4), (384, 2, 2)]
    torch.testing.assert_close(outs[0], stem, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(outs[-1], model.forward_features(x), rtol=1e-6, atol=1e-6)


def test_other_input_sizes():
    """The small configuration's attention table is 2 x 2 (128 px): 32 px gives a 1 x 1
    stage-4 map (a sub-table), 200 px a 4 x 4 one (offsets clamped to the table); the authors'
    code runs only the native size. At the native size the bias is the authors' gather."""
    _, sd = _small()
    model = LSNet(**SMALL).eval()
    model.load_state_dict(sd)
    attn = model.blocks4[3].mixer.m
    biases = sd["blocks4.3.mixer.m.attention_biases"]
    torch.testing.assert_close(attn._bias(2, 2), biases[:, authors_bias_idxs(2)], rtol=0, atol=0)
    torch.testing.assert_close(attn._bias(1, 1), biases[:, :1].reshape(-1, 1, 1), rtol=0, atol=0)
    for size, side in ((32, 1), (200, 4)):
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            out = model(x)
            last = model.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        assert last.shape[-2:] == (side, side)
        assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_path_matches_reference_cuda(monkeypatch):
    from zoo.models.ops import ska_triton_available

    if not ska_triton_available():
        pytest.skip("triton is not importable")
    monkeypatch.delenv("ZOO_OPS_BACKEND", raising=False)
    model = _randomised("lsnet_b").cuda()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        out = model(x)
        monkeypatch.setenv("ZOO_OPS_BACKEND", "reference")
        ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
