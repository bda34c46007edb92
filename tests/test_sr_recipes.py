"""Recipe pieces of the SR task beyond plain L1: EFDN's edge-enhanced gradient-variance loss and
initialisation from a model of another scale (RCAN / HAN's x2 -> x4)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import zoo
from zoo.hub import CheckpointError, save_safetensors
from zoo.tasks.base import TaskConfigError
from zoo.tasks.cli import train_main
from zoo.tasks.sr.losses import eg_loss, eg_loss_terms, gradient_variance_maps
from zoo.tasks.sr.module import SRModule, init_from_checkpoint

# ------------------------------------------------------------------------- EG loss (EFDN)


def _reference_eg_terms(sr: np.ndarray, hr: np.ndarray, n: int) -> np.ndarray:
    """The GV loss code's formula plus EFDN's Laplacian term, written out in float64 loops:
    grey = .2989 R + .5870 G + .1140 B; 3x3 filters with zero padding; non-overlapping n x n
    patches (remainder dropped); unbiased variance; mean squared difference of the variances."""
    kernels = [
        np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64),  # Sobel x
        np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64),  # Sobel y
        np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64),  # Laplacian
    ]

    def variances(img: np.ndarray, k: np.ndarray) -> list[float]:
        out = []
        for b in range(img.shape[0]):
            grey = 0.2989 * img[b, 0] + 0.5870 * img[b, 1] + 0.1140 * img[b, 2]
            h, w = grey.shape
            pad = np.zeros((h + 2, w + 2))
            pad[1:-1, 1:-1] = grey
            grad = np.zeros((h, w))
            for i in range(h):
                for j in range(w):
                    grad[i, j] = float((pad[i : i + 3, j : j + 3] * k).sum())  # cross-correlation, as conv2d
            for pi in range(h // n):
                for pj in range(w // n):
                    out.append(np.var(grad[pi * n : (pi + 1) * n, pj * n : (pj + 1) * n], ddof=1))
        return out

    terms = []
    for k in kernels:
        a, b = np.array(variances(sr, k)), np.array(variances(hr, k))
        terms.append(np.mean((a - b) ** 2))
    return np.array(terms)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 20, 27, generator=g)  # 20 x 27: patch 8 leaves a remainder on both axes
    sr = (hr + 0.1 * torch.randn(2, 3, 20, 27, generator=g)).clamp(0, 1)
    return sr, hr


def test_eg_loss_matches_reference_formula(pair):
    sr, hr = pair
    ref = _reference_eg_terms(sr.double().numpy(), hr.double().numpy(), 8)
    assert ref.shape == (3,) and (ref > 0).all()
    got64 = eg_loss_terms(sr.double(), hr.double(), patch_size=8)
    np.testing.assert_allclose(got64.numpy(), ref, rtol=1e-10, atol=0)
    got32 = eg_loss_terms(sr, hr, patch_size=8)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), ref, rtol=1e-4, atol=0)
    # the weighted sum lambda_x L_x + lambda_y L_y + lambda_l L_l
    w = (0.5, 2.0, 3.0)
    assert float(eg_loss(sr.double(), hr.double(), 8, w)) == pytest.approx(float(np.dot(w, ref)), rel=1e-10)
    # another patch size changes the patches (and the value)
    ref4 = _reference_eg_terms(sr.double().numpy(), hr.double().numpy(), 4)
    np.testing.assert_allclose(eg_loss_terms(sr.double(), hr.double(), 4).numpy(), ref4, rtol=1e-10)
    assert not np.allclose(ref4, ref)
    # (B, 3, P) maps: 2 x 3 patches of 8 x 8 in 20 x 27
    assert gradient_variance_maps(hr, 8).shape == (2, 3, 6)


def test_eg_loss_zero_positive_differentiable(pair):
    sr, hr = pair
    assert float(eg_loss(hr, hr)) == 0.0
    assert float(eg_loss(hr.clone(), hr)) == 0.0
    x = sr.clone().requires_grad_(True)
    loss = eg_loss(x, hr)
    assert float(loss.detach()) > 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # analytic gradient vs finite differences (float64)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: eg_loss(t, b, patch_size=3), (a,), fast_mode=True)
    # half precision inputs are computed in float32, under autocast too
    exact = eg_loss(sr.bfloat16().float(), hr.bfloat16().float())
    assert eg_loss(sr.bfloat16(), hr.bfloat16()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = eg_loss(sr.bfloat16(), hr.bfloat16())
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(float(exact), rel=1e-6)
    with pytest.raises(ValueError, match="smaller than one"):
        eg_loss(hr[..., :5, :5], hr[..., :5, :5])
    with pytest.raises(ValueError, match="shape"):
        eg_loss(sr, hr[..., :16, :16])


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_srmodule_training_step_with_eg_loss():
    torch.manual_seed(0)
    m = SRModule(model="efdn_x4", model_args={"channels": 16}, eg_weight=0.5, eg_patch_size=4, eg_weights=(1.0, 2.0, 0.5))
    g = torch.Generator().manual_seed(2)
    batch = {"lr": torch.rand(2, 3, 16, 16, generator=g), "hr": torch.rand(2, 3, 64, 64, generator=g)}
    loss = m.training_step(batch, 0)
    with torch.no_grad():
        sr = m.net(batch["lr"])
        expected = F.l1_loss(sr, batch["hr"]) + 0.5 * eg_loss(sr, batch["hr"], 4, (1.0, 2.0, 0.5))
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(expected) > float(F.l1_loss(sr, batch["hr"]))
    loss.backward()
    grads = [p.grad for p in m.net.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    with pytest.raises(TaskConfigError, match="eg_patch_size"):
        SRModule(model="efdn_x4", model_args={"channels": 16}, eg_weight=1.0, eg_patch_size=1)


ROOT = Path(__file__).resolve().parents[1]


def _config(name: str, capsys) -> dict:
    assert train_main("sr", ["-c", f"sr/{name}", "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_efdn_recipe_uses_eg_loss(capsys):
    cfg = _config("efdn_x4.yaml", capsys)["model"]
    assert cfg["model"] == "efdn_x4" and cfg["eg_weight"] > 0 and cfg["eg_patch_size"] == 8
    assert len(cfg["eg_weights"]) == 3
    # RCAN starts x3 / x4 from its x2 model; HAN every scale from RCAN's x2 model (non-strictly)
    for name, strict in (("rcan_x4.yaml", True), ("han_x4.yaml", False)):
        cfg = _config(name, capsys)["model"]
        assert cfg["init_from"] is None and cfg["init_strict"] is strict and cfg["init_upsampler"] == "match"
        assert "RCAN_BIX2.pt" in (ROOT / "configs" / "sr" / name).read_text()


# -------------------------------------------------------- init from another scale (RCAN x2)

SMALL = {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4}


@pytest.fixture(scope="module")
def x2_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("init")
    torch.manual_seed(10)
    files = {}
    for name in ("rcan_x2", "rcan_x3", "han_x2"):
        net = zoo.create(name, **SMALL)
        files[name] = save_safetensors(net.state_dict(), root / f"{name}.safetensors")
    wide = zoo.create("rcan_x2", **{**SMALL, "n_feats": 24})
    files["rcan_x2_wide"] = save_safetensors(wide.state_dict(), root / "rcan_x2_wide.safetensors")
    other = zoo.create("rlfn_s_x4", num_blocks=1)
    files["rlfn"] = save_safetensors(other.state_dict(), root / "rlfn.safetensors")
    # a `zoo train` Lightning checkpoint of the x2 model (net.* and a stray teacher.* entry)
    sd2 = {f"net.{k}": v for k, v in zoo.create("rcan_x2", **SMALL).state_dict().items()}
    sd2["teacher.head.0.weight"] = torch.zeros(1)
    files["ckpt"] = root / "x2.ckpt"
    torch.save({"state_dict": sd2, "hyper_parameters": {"model": "rcan_x2"}}, files["ckpt"])
    return files


def _sd(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _fresh(name: str, seed: int, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return zoo.create(name, **{**SMALL, **kw}).state_dict()


def test_init_rcan_x4_from_x2(x2_files):
    x2 = _sd(x2_files["rcan_x2"])
    fresh = _fresh("rcan_x4", 3)
    torch.manual_seed(3)
    m = SRModule(model="rcan_x4", model_args=SMALL, init_from=str(x2_files["rcan_x2"]))
    got = m.net.state_dict()
    assert set(got) == set(fresh) and set(x2) < set(got)
    body = [k for k in got if not k.startswith("tail.")]
    assert len(body) > 20 and any(k.startswith("body.1.body.1.body.3.conv_du") for k in body)
    for k in body:
        assert torch.equal(got[k], x2[k]), k
        if k.startswith(("head.", "body.")):
            assert not torch.equal(got[k], fresh[k]), k  # really replaced
    # the authors' rule: name and shape match -> copied (the first 2x stage and the last conv) ...
    for k in ("tail.0.0.weight", "tail.0.0.bias", "tail.1.weight", "tail.1.bias"):
        assert torch.equal(got[k], x2[k]), k
    # ... and the second 2x stage, absent at x2, is untouched
    for k in ("tail.0.2.weight", "tail.0.2.bias"):
        assert torch.equal(got[k], fresh[k]), k
    rep = m.init_report
    assert rep["new"] == ["tail.0.2.weight", "tail.0.2.bias"] and rep["skipped"] == [] and rep["ignored"] == []
    assert len(rep["loaded"]) == len(got) - 2

    # upsampler "new": the whole tail keeps its fresh initialisation, the body is the x2 one
    torch.manual_seed(3)
    m = SRModule(model="rcan_x4", model_args=SMALL, init_from=str(x2_files["rcan_x2"]), init_upsampler="new")
    got = m.net.state_dict()
    for k in got:
        assert torch.equal(got[k], fresh[k] if k.startswith("tail.") else x2[k]), k
    assert len(m.init_report["skipped"]) == 4 and m.init_report["new"] == ["tail.0.2.weight", "tail.0.2.bias"]


def test_init_from_x3_and_lightning_checkpoint(x2_files):
    x3 = _sd(x2_files["rcan_x3"])
    fresh = _fresh("rcan_x4", 4)
    torch.manual_seed(4)
    net = zoo.create("rcan_x4", **SMALL)
    rep = init_from_checkpoint(net, x2_files["rcan_x3"])
    got = net.state_dict()
    # x3's single conv C -> 9C differs in shape from x4's C -> 4C: skipped, left new
    assert rep["skipped"] == ["tail.0.0.weight: (144, 16, 3, 3) vs (64, 16, 3, 3)", "tail.0.0.bias: (144,) vs (64,)"]
    assert torch.equal(got["tail.0.0.weight"], fresh["tail.0.0.weight"]) and torch.equal(got["tail.1.weight"], x3["tail.1.weight"])
    assert torch.equal(got["body.0.body.0.body.0.weight"], x3["body.0.body.0.body.0.weight"])

    ckpt = torch.load(x2_files["ckpt"], weights_only=True)["state_dict"]
    net = zoo.create("rcan_x4", **SMALL)
    rep = init_from_checkpoint(net, x2_files["ckpt"])
    assert rep["ignored"] == [] and rep["new"] == ["tail.0.2.weight", "tail.0.2.bias"]
    assert torch.equal(net.state_dict()["body.2.weight"], ckpt["net.body.2.weight"])


def test_init_from_han_and_wrong_architectures(x2_files):
    han2 = _sd(x2_files["han_x2"])
    m = SRModule(model="han_x4", model_args=SMALL, init_from=str(x2_files["han_x2"]))
    got = m.net.state_dict()
    for k in ("la.gamma", "csa.conv.weight", "last_conv.weight", "last.weight", "body.1.body.0.body.3.conv_du.0.weight"):
        assert torch.equal(got[k], han2[k]), k
    assert m.init_report["new"] == ["tail.0.2.weight", "tail.0.2.bias"]

    def fails(model: str, file: str, match: str, **kw) -> None:
        net = zoo.create(model, **SMALL)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        with pytest.raises(CheckpointError, match=match):
            init_from_checkpoint(net, x2_files[file], **kw)
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded

    # another architecture entirely: refused, strict or not
    fails("rcan_x4", "rlfn", "does not fit RCAN outside the upsampler")
    fails("rcan_x4", "rlfn", "no tensor outside the upsampler", strict=False)
    # another width: shape mismatches in the body, refused even when not strict
    fails("rcan_x4", "rcan_x2_wide", r"shape mismatches .* head\.0\.weight: \(24, 3, 3, 3\) vs \(16, 3, 3, 3\)", strict=False)
    # a HAN file offered to RCAN, an RCAN file offered to HAN: refused when strict ...
    fails("rcan_x4", "han_x2", r"the model lacks 8 file tensors, e\.g\. csa\.conv\.bias")
    fails("han_x4", "rcan_x2", r"the file lacks 8 model tensors, e\.g\. csa\.gamma")
    # ... and loaded where it matches when not
    net = zoo.create("han_x4", **SMALL)
    rep = init_from_checkpoint(net, x2_files["rcan_x2"], strict=False)
    assert sorted(rep["new"]) == sorted(["csa.gamma", "csa.conv.weight", "csa.conv.bias", "la.gamma", "last_conv.weight",
                                          "last_conv.bias", "last.weight", "last.bias", "tail.0.2.weight", "tail.0.2.bias"])  # fmt: skip
    with pytest.raises(TaskConfigError, match="one source of weights"):
        SRModule(model="rcan_x4", model_args=SMALL, checkpoint_path=str(x2_files["rcan_x2"]), init_from=str(x2_files["rcan_x2"]))
    with pytest.raises(CheckpointError, match="does not exist"):
        SRModule(model="rcan_x4", model_args=SMALL, init_from="/nonexistent/x2.pth")


def test_init_from_through_zoo_train(x2_files, tmp_path, capsys):
    import skimage.data
    from PIL import Image

    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(skimage.data.astronaut()).resize((96, 96)).save(hr / "a.png")
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Keep()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(handler)
    base = [
        "-c", "sr/rcan_x4.yaml", f"--data.train_dir={hr}", "--data.val_dir=null", "--data.patch_size=12",
        "--data.batch_size=2", "--data.num_workers=0", "--data.repeat=2", "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
        "--model.model_args={n_resgroups: 2, n_resblocks: 2, n_feats: 16, reduction: 4}",
    ]  # fmt: skip
    try:
        assert train_main("sr", [*base, f"--model.init_from={x2_files['rcan_x2']}"]) == 0
        capsys.readouterr()
        assert train_main("sr", [*base, f"--model.init_from={x2_files['rlfn']}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        log.removeHandler(handler)
    report = [r for r in records if r.startswith("init_from ")]
    assert len(report) == 1 and "new, not in the file: tail.0.2.weight, tail.0.2.bias" in report[0], records
    assert f"loaded {len(_fresh('rcan_x4', 0)) - 2} of {len(_fresh('rcan_x4', 0))} tensors" in report[0]
    assert err and err[-1].startswith("error: ") and "does not fit RCAN outside the upsampler" in err[-1], err
