"""The IMDN / RFDN / RLFN-pruned / PAN / EFDN line: the authors' RFDN file on Set5, EFDN's train
form vs deploy form, foreign checkpoints refused with a clear error, and each model's layout
against the authors' state-dict names (written down from their code) and parameter counts."""

from __future__ import annotations

import shutil

import pytest
import torch

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError, save_safetensors, sha256_file
from zoo.models.efdn import EDBB, EFDN
from zoo.registry import get_entry
from zoo.tasks.sr.evaluate import evaluate_sr

RFDN_SET5_X4 = 32.161  # the authors' code with rfdn_aim_x4.pth (../shared/upstream/README.md)

# sum(p.numel() for p in model.parameters()) of the authors' code, for the published forms:
# IMDN(upscale=s) (model/architecture.py), RFDN() (= the numel of RFDN_AIM.pth), RLFN_Prune()
# (model/rlfn_ntire.py; README 0.317M), PAN(3, 3, 40, 24, 16, s) (PAN_arch.py; README 272K at x4),
# EFDN() of team00_EFDN.py (deploy form; challenge README 0.276M).
AUTHORS_PARAMS = {
    "imdn_x4": 715_176,
    "imdn_x3": 703_059,
    "imdn_x2": 694_404,
    "rfdn_x4": 433_448,
    "rlfn_ntire_x4": 317_218,
    "pan_x4": 272_419,
    "pan_x3": 261_403,
    "pan_x2": 261_403,
}
EFDN_DEPLOY_PARAMS = 276_192


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _lr(h: int = 16, w: int = 20, seed: int = 1) -> torch.Tensor:
    # small: ESA (RFDN, RLFN, EFDN) needs at least 15 pixels a side
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _wb(*names: str) -> list[str]:
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


# ------------------------------------------------------------------------------- RFDN parity


def test_rfdn_set5_parity(upstream_dir, set5_dir):
    path = upstream_dir / "sr" / "rfdn_aim_x4.pth"
    cfg = get_entry("rfdn_x4").get_cfg()
    assert cfg.verified and sha256_file(path) == cfg.sha256
    assert cfg.url == "https://github.com/njulj/RFDN/raw/master/trained_model/RFDN_AIM.pth"
    model = zoo.create("rfdn_x4", checkpoint_path=path)
    r = evaluate_sr(model, set5_dir, 4)
    assert r["num_images"] == 5
    assert abs(r["psnr_y"] - RFDN_SET5_X4) < 0.01, r["psnr_y"]
    assert cfg.metrics["set5_x4_psnr_y"] == RFDN_SET5_X4


def test_rfdn_layout_is_the_published_file(upstream_dir, zoo_cache):
    """The authors' file and our model: same names, same shapes, same count; the file also
    resolves from the zoo cache by name (sha256-checked, offline)."""
    path = upstream_dir / "sr" / "rfdn_aim_x4.pth"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model = zoo.create("rfdn_x4")
    assert {k: tuple(v.shape) for k, v in sd.items()} == _shapes(model)
    assert sum(v.numel() for v in sd.values()) == count_params(model) == AUTHORS_PARAMS["rfdn_x4"]
    (zoo_cache / "checkpoints").mkdir(parents=True)
    shutil.copy(path, zoo_cache / "checkpoints" / "RFDN_AIM.pth")
    cached = zoo.create("rfdn_x4.aim2020", pretrained=True)
    assert all(torch.equal(cached.state_dict()[k], v) for k, v in sd.items())


# ------------------------------------------------------------------------- foreign checkpoints


def test_foreign_checkpoints_are_refused(upstream_dir, tmp_path):
    rfdn = upstream_dir / "sr" / "rfdn_aim_x4.pth"
    with pytest.raises(CheckpointError, match=r"checkpoint is RFDN \(njulj/RFDN\), not IMDN.*'imdn_x4'.*'rfdn_x4'"):
        zoo.create("imdn_x4", checkpoint_path=rfdn)
    with pytest.raises(CheckpointError, match=r"does not fit architecture 'rlfn_x4'.*missing keys"):
        zoo.create("rlfn_x4", checkpoint_path=rfdn)
    for name in ("rlfn_ntire_x4", "pan_x4", "efdn_x4"):
        with pytest.raises(CheckpointError, match=f"RFDN .*cannot load into '{name}'; load it with zoo.create\\('rfdn_x4'"):
            zoo.create(name, checkpoint_path=rfdn)
    # the full RLFN into the pruned one: named, with the model to use
    with pytest.raises(CheckpointError, match=r"checkpoint is RLFN \(6 blocks, 52 channels\), not the pruned.*zoo.create\('rlfn_x4'"):
        zoo.create("rlfn_ntire_x4", checkpoint_path=upstream_dir / "sr" / "rlfn_x4.pth")
    # another scale of the same family
    x2 = save_safetensors(zoo.create("imdn_x2").state_dict(), tmp_path / "imdn_x2.safetensors")
    with pytest.raises(CheckpointError, match="upscales x2 but 'imdn_x4' upscales x4"):
        zoo.create("imdn_x4", checkpoint_path=x2)
    pan2 = save_safetensors(zoo.create("pan_x2").state_dict(), tmp_path / "pan_x2.safetensors")
    with pytest.raises(CheckpointError, match="PAN x2 or x3"):
        zoo.create("pan_x4", checkpoint_path=pan2)


# -------------------------------------------------------------------- layouts vs the authors'

# One block of each network, as the authors' code names it (read from their files).
IMDB_KEYS = _wb("c1", "c2", "c3", "c4", "c5", "cca.conv_du.0", "cca.conv_du.2")
RLFB_PRUNE_SHAPES = {  # RLFB(46, 48) of bytedance/RLFN model/block.py, esa_channels 16
    "c1_r.weight": (48, 46, 3, 3), "c2_r.weight": (48, 48, 3, 3), "c3_r.weight": (46, 48, 3, 3),
    "c5.weight": (46, 46, 1, 1), "esa.conv1.weight": (16, 46, 1, 1), "esa.conv_f.weight": (16, 16, 1, 1),
    "esa.conv2.weight": (16, 16, 3, 3), "esa.conv3.weight": (16, 16, 3, 3), "esa.conv4.weight": (46, 16, 1, 1),
}  # fmt: skip
SCPA_KEYS = [
    "conv1_a.weight", "conv1_b.weight", "k1.0.weight", "PAConv.k2.weight", "PAConv.k2.bias",
    "PAConv.k3.weight", "PAConv.k4.weight", "conv3.weight",
]  # fmt: skip
ESA_FULL = ("att.conv1", "att.conv_f", "att.conv_max", "att.conv2", "att.conv3", "att.conv3_", "att.conv4")
EFDN_CELL_KEYS = (  # Cell of team00_EFDN.py with EDBB_deploy (the published file's form)
    _wb("conv1.conv1x1", "conv2.rep_conv", "conv3.rep_conv", "fuse", *ESA_FULL, *(f"branch.{i}" for i in range(4)))
    + ["conv1.act.weight", "conv2.act.weight", "conv3.act.weight"]
)
EDBB_TRAIN_KEYS = (  # EDBB of team00_EFDN.py, train form (it always holds conv1x1_3x3)
    _wb("rep_conv", "conv1x1")
    + [f"conv1x1_3x3.{p}" for p in ("k0", "b0", "k1", "b1")]
    + [f"conv1x1_{e}.{p}" for e in ("sbx", "sby", "lpl") for p in ("k0", "b0", "scale", "bias", "mask")]
    + ["act.weight"]
)


def _upstream_keys(name: str) -> set[str]:
    if name.startswith("imdn"):
        return {*_wb("fea_conv", "c.0", "LR_conv", "upsampler.0"), *(f"IMDB{i}.{k}" for i in range(1, 7) for k in IMDB_KEYS)}
    if name == "rlfn_ntire_x4":
        block = [k for k in RLFB_PRUNE_SHAPES] + [k.replace(".weight", ".bias") for k in RLFB_PRUNE_SHAPES]
        return {*_wb("conv_1", "conv_2", "upsampler.0"), *(f"block_{i}.{k}" for i in range(1, 5) for k in block)}
    if name.startswith("pan"):
        top = ["conv_first", "trunk_conv", "upconv1", "att1.conv", "HRconv1", "conv_last"]
        if name == "pan_x4":
            top += ["upconv2", "att2.conv", "HRconv2"]
        return {*_wb(*top), *(f"SCPA_trunk.{i}.{k}" for i in range(16) for k in SCPA_KEYS)}
    if name == "efdn_x4":
        lf = [f"local_fuse.{i}" for i in range(3)]
        return {*_wb("head", *lf, "tail.0"), *(f"cells.{i}.{k}" for i in range(4) for k in EFDN_CELL_KEYS)}
    raise KeyError(name)


@pytest.mark.parametrize("name", ["imdn_x4", "imdn_x3", "imdn_x2", "rlfn_ntire_x4", "pan_x4", "pan_x3", "pan_x2"])
def test_layout_matches_the_authors(name, tmp_path):
    model = zoo.create(name)
    assert set(model.state_dict()) == _upstream_keys(name)
    assert count_params(model) == AUTHORS_PARAMS[name] == get_entry(name).params
    shapes = _shapes(model)
    if name == "rlfn_ntire_x4":
        assert all(shapes[f"block_3.{k}"] == s for k, s in RLFB_PRUNE_SHAPES.items())
    if name.startswith("imdn"):  # 64 channels, a quarter distilled: c4 48 -> 16, CCA 64 -> 4 -> 64
        assert shapes["IMDB2.c4.weight"] == (16, 48, 3, 3) and shapes["IMDB2.cca.conv_du.0.weight"] == (4, 64, 1, 1)
    if name.startswith("pan"):  # nf 40 split in two halves of 20; PAConv's 3x3 convs have no bias
        assert shapes["SCPA_trunk.7.PAConv.k3.weight"] == (20, 20, 3, 3) and shapes["conv_last.weight"] == (3, 24, 3, 3)
    # a file with the authors' names loads through the cfg's filter and gives the same outputs
    path = tmp_path / "upstream.pth"
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
    loaded = zoo.create(name, checkpoint_path=path).eval()
    x = _lr()
    with torch.no_grad():
        out = loaded(x)
        assert torch.equal(out, model.eval()(x))
    assert out.shape == (1, 3, 16 * model.scale, 20 * model.scale)


def test_efdn_layout_matches_the_authors():
    deploy = zoo.create("efdn_x4", deploy=True)
    ours = {k.replace(".fusion.", ".fuse."): v for k, v in deploy.state_dict().items()}
    assert set(ours) == _upstream_keys("efdn_x4")
    assert count_params(deploy) == EFDN_DEPLOY_PARAMS
    assert tuple(ours["cells.2.fuse.weight"].shape) == (48, 96, 1, 1)
    assert tuple(ours["cells.2.att.conv_max.weight"].shape) == (12, 12, 3, 3)  # ESA of n_feats // 4
    assert tuple(ours["tail.0.weight"].shape) == (48, 48, 3, 3)
    # train form with the 1x1-3x3 branch built: the authors' EDBB, name for name
    edbb = EDBB(48, 48, with_13=True)
    assert set(edbb.state_dict()) == set(EDBB_TRAIN_KEYS)
    # the fixed edge masks, as the authors' SeqConv3x3 fills them
    sbx, sby, lpl = (edbb.get_submodule(f"conv1x1_{e}").mask[5, 0] for e in ("sbx", "sby", "lpl"))
    assert sbx.tolist() == [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    assert sby.tolist() == [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    assert lpl.tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert not any(p.requires_grad for n, p in edbb.named_parameters() if n.endswith("mask"))


# ------------------------------------------------------------------- EFDN: train vs deploy form


def _perturbed_efdn(**kwargs) -> EFDN:
    """A train-form EFDN whose edge branches matter (their init scale of 1e-3 barely would)."""
    torch.manual_seed(0)
    m = zoo.create("efdn_x4", **kwargs)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith((".scale", ".bias")) and ".conv1x1_" in n:
                p.normal_(0, 0.05)
    return m.eval()


@pytest.mark.parametrize("args", [{}, {"with_13": True, "with_idt": True}])
def test_efdn_optimize_equals_and_deploy_round_trip(args, tmp_path):
    m = _perturbed_efdn(**args)
    x = _lr()
    with torch.no_grad():
        want = m(x)
        fast = zoo.optimize(m)
        got = fast(x)
    assert _rel_err(got, want) < 1e-5
    assert sum(1 for _ in fast.modules()) < sum(1 for _ in m.modules())
    assert count_params(fast) == EFDN_DEPLOY_PARAMS and fast.deploy and not m.deploy
    deploy = zoo.create("efdn_x4", deploy=True, **args)
    assert sorted(fast.state_dict()) == sorted(deploy.state_dict())
    # the deploy form's state dict loads into a model built in deploy form, outputs unchanged
    f = save_safetensors(fast.state_dict(), tmp_path / "deploy.safetensors")
    again = zoo.create("efdn_x4", checkpoint_path=f, deploy=True, **args).eval()
    with torch.no_grad():
        assert torch.equal(again(x), got)
    # a train-form file into the deploy form: fused by the filter, as reparameterize() does
    t = save_safetensors(m.state_dict(), tmp_path / "train.safetensors")
    fused = zoo.create("efdn_x4", checkpoint_path=t, deploy=True, **args).eval()
    with torch.no_grad():
        assert _rel_err(fused(x), want) < 1e-5


def test_efdn_published_layout_loads_into_both_forms(tmp_path):
    """A file laid out as team00_EFDN.pth (deploy form, ``fuse`` names): into ``deploy=True`` as
    it is, into the default train form with zero extra branches; same outputs, bit for bit."""
    torch.manual_seed(3)
    ref = zoo.create("efdn_x4", deploy=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    sd = {k.replace(".fusion.", ".fuse."): v.clone() for k, v in ref.state_dict().items()}
    assert set(sd) == _upstream_keys("efdn_x4")
    path = tmp_path / "team00_EFDN.pth"
    torch.save(sd, path)
    x = _lr(seed=5)
    deploy = zoo.create("efdn_x4", checkpoint_path=path, deploy=True).eval()
    train = zoo.create("efdn_x4", checkpoint_path=path).eval()
    assert not train.deploy
    with torch.no_grad():
        want = ref(x)
        assert torch.equal(deploy(x), want) and torch.equal(train(x), want)
        folded = zoo.optimize(train)
        assert torch.equal(folded(x), want)
    assert all(torch.equal(folded.state_dict()[k], v) for k, v in ref.state_dict().items())
    # the zeroed edge branches can still learn: their scales get a gradient
    train.train()
    train(x).sum().backward()
    assert train.cells[0].conv2.conv1x1_sbx.scale.grad.abs().sum() > 0
