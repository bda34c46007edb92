"""CrossFormer (cheerss/CrossFormer): parameter counts, the authors' state-dict layout, the
checkpoint filter, and an independent float64 re-computation of the whole network.

The reference below is written from the paper and the authors' code, not from
zoo.models.crossformer: CEL as explicit convolutions, and LSDA as a loop over groups that lists
each group's member positions (SDA: a G x G window; LDA: every I-th row and column), attends only
among the real (unpadded) members and takes each pair's bias straight from the DPB MLP at the
pair's offset. It reads the weights by the authors' parameter names.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.cost import count_gmacs, count_params
from zoo.models.backbone import build_backbone
from zoo.registry import get_entry
from zoo.weights.filters_crossformer import filter_crossformer

# configs/{tiny,small}_patch4_group7_224.yaml of the authors, plus config.py's defaults
# (INTERVAL [8, 4, 2, 1], MLP_RATIO 4, QKV_BIAS, PATCH_NORM, APE False).
CONFIGS = {
    "crossformer_t": dict(embed_dim=64, depths=(1, 1, 8, 6), heads=(2, 4, 8, 16)),
    "crossformer_s": dict(embed_dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24)),
}
PATCH, MERGE, GROUP, INTERVAL = (4, 8, 16, 32), (2, 4), 7, (8, 4, 2, 1)
PAPER_PARAMS_M = {"crossformer_t": 27.8, "crossformer_s": 30.7}  # paper / README
PAPER_GFLOPS = {"crossformer_t": 2.9, "crossformer_s": 4.9}


def _split(total: int, kernels) -> list[int]:
    # the authors' channel rule for CEL: i < last -> total // 2**(i+1), last -> total // 2**i
    return [total // 2 ** (i + 1) if i < len(kernels) - 1 else total // 2 ** i for i in range(len(kernels))]


def upstream_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Every entry of the authors' ``model.state_dict()`` (models/crossformer.py, 224 x 224),
    with its shape: parameters and the two attention buffers."""
    c = CONFIGS[name]
    e, out = c["embed_dim"], {}

    def lin(p, o, i):
        out[f"{p}.weight"], out[f"{p}.bias"] = (o, i), (o,)

    def ln(p, d):
        out[f"{p}.weight"], out[f"{p}.bias"] = (d,), (d,)

    for i, (k, d) in enumerate(zip(PATCH, _split(e, PATCH))):
        out[f"patch_embed.projs.{i}.weight"], out[f"patch_embed.projs.{i}.bias"] = (d, 3, k, k), (d,)
    ln("patch_embed.norm", e)
    for s, (depth, nh) in enumerate(zip(c["depths"], c["heads"])):
        dim = e * 2 ** s
        pd = dim // 4 // 4
        for j in range(depth):
            p = f"layers.{s}.blocks.{j}"
            ln(f"{p}.norm1", dim)
            lin(f"{p}.attn.pos.pos_proj", pd, 2)
            for m in ("pos1", "pos2", "pos3"):
                ln(f"{p}.attn.pos.{m}.0", pd)
                lin(f"{p}.attn.pos.{m}.2", nh if m == "pos3" else pd, pd)
            out[f"{p}.attn.biases"] = ((2 * GROUP - 1) ** 2, 2)
            out[f"{p}.attn.relative_position_index"] = (GROUP**2, GROUP**2)
            lin(f"{p}.attn.qkv", 3 * dim, dim)
            lin(f"{p}.attn.proj", dim, dim)
            ln(f"{p}.norm2", dim)
            lin(f"{p}.mlp.fc1", 4 * dim, dim)
            lin(f"{p}.mlp.fc2", dim, 4 * dim)
        if s < 3:
            ln(f"layers.{s}.downsample.norm", dim)
            for i, (k, d) in enumerate(zip(MERGE, _split(2 * dim, MERGE))):
                out[f"layers.{s}.downsample.reductions.{i}.weight"] = (d, dim, k, k)
                out[f"layers.{s}.downsample.reductions.{i}.bias"] = (d,)
    ln("norm", e * 8)
    lin("head", 1000, e * 8)
    return out


def offset_tables(g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' two buffers for a g x g group, by direct enumeration: the offsets (dy, dx)
    row-major, and for each pair of positions the row of (y_p - y_q, x_p - x_q) in that list."""
    offs = [(dy, dx) for dy in range(1 - g, g) for dx in range(1 - g, g)]
    row = {o: r for r, o in enumerate(offs)}
    pos = [(y, x) for y in range(g) for x in range(g)]
    index = torch.tensor([[row[(p[0] - q[0], p[1] - q[1])] for q in pos] for p in pos])
    return torch.tensor(offs, dtype=torch.float32), index


def upstream_state_dict(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """A state dict as the authors' code saves it: our parameters under their names plus the
    per-block buffers."""
    shapes = upstream_shapes(name)
    own = model.state_dict()
    biases, index = offset_tables(GROUP)
    sd = {}
    for k in shapes:
        if k.endswith("attn.biases"):
            sd[k] = biases.clone()
        elif k.endswith("attn.relative_position_index"):
            sd[k] = index.clone()
        else:
            sd[k] = own[k]
    return sd


# ------------------------------------------------------------------------------ reference forward


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)


def _lin(x, sd, p):
    return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def _dpb(sd, p, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    t = torch.stack([dy, dx], -1).to(torch.float64)
    t = _lin(t, sd, f"{p}.pos_proj")
    for m in ("pos1", "pos2", "pos3"):
        t = _lin(torch.relu(_ln(t, sd, f"{p}.{m}.0")), sd, f"{p}.{m}.2")
    return t  # (..., heads)


def _groups(h: int, w: int, lda: bool, interval: int):
    """Each group as lists (rows, cols, u, v): the real positions and their place in the group grid."""
    if not lda or min(h, w) <= GROUP:
        g = min(GROUP, h, w)
        for a in range(math.ceil(h / g)):
            for b in range(math.ceil(w / g)):
                mem = [(a * g + u, b * g + v, u, v) for u in range(g) for v in range(g) if a * g + u < h and b * g + v < w]
                yield [list(t) for t in zip(*mem)]
    else:
        i = interval
        for r in range(i):
            for s in range(i):
                mem = [(r + i * u, s + i * v, u, v) for u in range(math.ceil(h / i)) for v in range(math.ceil(w / i))
                       if r + i * u < h and s + i * v < w]
                if mem:
                    yield [list(t) for t in zip(*mem)]


def ref_block(x, sd, p, heads, lda, interval):
    b, h, w, c = x.shape
    hd = c // heads
    y = _ln(x, sd, f"{p}.norm1")
    qkv = _lin(y, sd, f"{p}.attn.qkv")
    att = torch.zeros_like(y)
    for rows, cols, u, v in _groups(h, w, lda, interval):
        rr, cc = torch.tensor(rows), torch.tensor(cols)
        t = qkv[:, rr, cc]  # b, n, 3c
        n = t.shape[1]
        q, k, val = (t[..., i * c:(i + 1) * c].reshape(b, n, heads, hd).transpose(1, 2) for i in range(3))
        uu, vv = torch.tensor(u), torch.tensor(v)
        bias = _dpb(sd, f"{p}.attn.pos", uu[:, None] - uu[None, :], vv[:, None] - vv[None, :]).permute(2, 0, 1)
        logits = q @ k.transpose(-1, -2) * hd**-0.5 + bias
        o = logits.softmax(-1) @ val
        att[:, rr, cc] = o.transpose(1, 2).reshape(b, n, c)
    x = x + _lin(att, sd, f"{p}.attn.proj")
    z = _lin(F.gelu(_lin(_ln(x, sd, f"{p}.norm2"), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    return x + z


def ref_forward(sd, name, img):
    c = CONFIGS[name]
    x = torch.cat([
        F.conv2d(img, sd[f"patch_embed.projs.{i}.weight"], sd[f"patch_embed.projs.{i}.bias"], stride=4, padding=(k - 4) // 2)
        for i, k in enumerate(PATCH)
    ], 1).permute(0, 2, 3, 1)
    x = _ln(x, sd, "patch_embed.norm")
    for s, (depth, nh) in enumerate(zip(c["depths"], c["heads"])):
        for j in range(depth):
            x = ref_block(x, sd, f"layers.{s}.blocks.{j}", nh, lda=j % 2 == 1, interval=INTERVAL[s])
        if s < 3:
            y = _ln(x, sd, f"layers.{s}.downsample.norm").permute(0, 3, 1, 2)
            x = torch.cat([
                F.conv2d(y, sd[f"layers.{s}.downsample.reductions.{i}.weight"],
                         sd[f"layers.{s}.downsample.reductions.{i}.bias"], stride=2, padding=(k - 2) // 2)
                for i, k in enumerate(MERGE)
            ], 1).permute(0, 2, 3, 1)
    x = _ln(x, sd, "norm").mean((1, 2))
    return _lin(x, sd, "head")


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """One instance per variant for the whole file (building one costs seconds of weight init)."""
    torch.manual_seed(0)
    return {name: zoo.create(name).eval() for name in CONFIGS}


@pytest.fixture(scope="module")
def doubles(models) -> dict[str, torch.nn.Module]:
    """Float64 copies with the LayerNorm affines and biases randomised (the init leaves them at
    one / zero, where a wrong one would not show)."""
    out = {}
    torch.manual_seed(0)
    for name, model in models.items():
        m = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            for prm in m.parameters():
                if prm.ndim == 1:
                    prm.add_(torch.randn_like(prm) * 0.1)
        out[name] = m
    return out


# ----------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(CONFIGS))
def test_params_match_authors_layout(name, models):
    """Our parameters are exactly the authors' (names, shapes, count); the paper's 27.8M / 30.7M
    and 2.9G / 4.9G FLOPs (multiply-adds) at 224."""
    m = models[name]
    up = {k: v for k, v in upstream_shapes(name).items() if not k.endswith(("attn.biases", "attn.relative_position_index"))}
    own = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert own == up
    n = sum(math.prod(s) for s in up.values())
    assert count_params(m) == n == get_entry(name).params
    assert round(n / 1e6, 1) == PAPER_PARAMS_M[name]
    assert round(count_gmacs(m, (3, 224, 224)), 1) == PAPER_GFLOPS[name]


def _check_against_reference(m: torch.nn.Module, name: str, size: tuple[int, int], both_paths: bool = False) -> None:
    sd = dict(m.state_dict())
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        outs = [m(x)]
        ref = ref_forward(sd, name, x)
        if both_paths:  # the explicit-softmax path as well as SDPA (or the reverse)
            attns = [(mod, mod.fused_attn) for mod in m.modules() if hasattr(mod, "fused_attn")]
            for mod, flag in attns:
                mod.fused_attn = not flag
            outs.append(m(x))
            for mod, flag in attns:
                mod.fused_attn = flag
    scale = max(1.0, ref.abs().max().item())
    for out in outs:
        assert (out - ref).abs().max().item() < 1e-10 * scale


@pytest.mark.parametrize("name, size", [("crossformer_t", (64, 64)), ("crossformer_t", (72, 104)), ("crossformer_s", (64, 64))])
def test_matches_float64_reference(name, size, doubles):
    """Whole network vs the loop-over-groups reference, float64. 64: SDA pads 16 -> 21 and
    8 -> 14, LDA groups of 2 x 2, stages 3/4 one group; 72 x 104: non-square, LDA pads too."""
    _check_against_reference(doubles[name], name, size, both_paths=size == (72, 104))


@pytest.mark.slow
def test_matches_float64_reference_224(doubles):
    """The whole of CrossFormer-T at 224 (no padding anywhere) vs the reference, float64."""
    _check_against_reference(doubles["crossformer_t"], "crossformer_t", (224, 224))


@pytest.mark.parametrize("stage, block, side", [(0, 0, 56), (0, 1, 56), (1, 1, 28), (2, 1, 14), (2, 2, 14), (3, 1, 7)])
def test_blocks_match_reference_at_224(stage, block, side, doubles):
    """CrossFormer-S's blocks on the grids a 224 input gives them: SDA windows of 7, LDA with
    intervals 8/4/2 (groups of 7 x 7, as the classification code's H // G), stage 4 one 7 x 7
    group. float64, every parameter perturbed."""
    m = doubles["crossformer_s"]
    sd = dict(m.state_dict())
    blk = m.layers[stage].blocks[block]
    heads = CONFIGS["crossformer_s"]["heads"][stage]
    torch.manual_seed(2)
    x = torch.randn(1, side, side, 96 * 2**stage, dtype=torch.float64)
    with torch.no_grad():
        ours = blk(x)
        ref = ref_block(x, sd, f"layers.{stage}.blocks.{block}", heads, lda=block % 2 == 1, interval=INTERVAL[stage])
    assert (ours - ref).abs().max().item() < 1e-10 * ref.abs().max().item()


def test_sizes_do_not_leak_between_calls(models):
    """The authors' detection block shrinks its group size in place after a small input; here a
    small input leaves the next forward unchanged (at 96 stage 2 is 12 x 12: LDA, unless a 32
    input had left it at SDA with groups of 4, as the authors' detection code would)."""
    m = models["crossformer_t"]
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = m(x)
        m(torch.randn(1, 3, 32, 32))
        b = m(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_filter_consumes_every_key(name, models):
    """The authors' layout ({'model': ...} with the index buffers) -> exactly our state dict."""
    src = models[name]
    sd = upstream_state_dict(src, name)
    filtered = filter_crossformer({"model": sd}, src)
    assert set(filtered) == set(src.state_dict())
    assert all(filtered[k] is sd[k] for k in filtered)
    assert len(sd) - len(filtered) == 2 * sum(CONFIGS[name]["depths"])  # biases + index per block


def test_authors_file_loads_through_cfg(models, tmp_path, zoo_cache):
    """A file as the authors' training script saves it ({'model': ..., 'epoch': ...}) loads
    strictly via zoo.create(checkpoint_path=) and gives the source model's outputs."""
    src = models["crossformer_t"]
    path = tmp_path / "crossformer-t.pth"
    torch.save({"model": upstream_state_dict(src, "crossformer_t"), "epoch": 299, "max_accuracy": 81.5}, path)
    m = zoo.create("crossformer_t", checkpoint_path=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), src(x))


def test_filter_rejects_foreign_buffers(models):
    src = models["crossformer_t"]
    for key, bad in (("layers.2.blocks.3.attn.relative_position_index", lambda t: t.flip(0)),
                     ("layers.0.blocks.0.attn.biases", lambda t: t * 2)):
        sd = upstream_state_dict(src, "crossformer_t")
        sd[key] = bad(sd[key])
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            filter_crossformer(sd, src)


def test_stage_features_and_cards(models):
    m = models["crossformer_t"]
    f = build_backbone(copy.deepcopy(m), features_only=True).eval()
    assert f.feature_info.channels() == [64, 128, 256, 512]
    assert f.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = f(x)
        final, inter = m.forward_intermediates(x, norm=True)
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    for a, b in zip(outs[:3], inter[:3]):
        assert torch.equal(a, b)
    assert torch.equal(inter[-1], final.permute(0, 3, 1, 2))  # norm=True: the last one is final-normed
    assert torch.equal(m.norm(outs[-1].permute(0, 2, 3, 1)), final)
    for name, top1 in (("crossformer_t", 81.5), ("crossformer_s", 82.5)):
        cfg = get_entry(name).get_cfg()
        assert cfg.metrics["imagenet_top1"] == top1 and cfg.filter_fn is filter_crossformer
        assert cfg.data_cfg["interpolation"] == "bicubic" and cfg.data_cfg["crop_pct"] == 0.875
