"""The super-resolution task: metrics against published figures, upstream parity through the
evaluator, data reading, `zoo eval sr` / `zoo train sr` (in-process and DDP), checkpoints."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.tasks.base import TASKS, ZooModule, get_task
from zoo.tasks.cli import eval_main, train_main
from zoo.tasks.sr.data import SRDataModule, SRPairedDataset, SRTrainDataset, read_image
from zoo.tasks.sr.evaluate import evaluate_sr, upscale_tiled
from zoo.tasks.sr.metrics import crop_border, psnr_ssim_y, psnr_y, rgb_to_y, ssim_y, to_uint8_image
from zoo.tasks.sr.module import SRModule

ROOT = Path(__file__).resolve().parents[1]

# Set5 x4 PSNR-Y from the authors' code (../shared/upstream/README.md) and RCAN's paper.
RCAN_SET5_X4 = 32.634
UPSTREAM_SET5_X4 = {"rlfn_x4": 32.240, "rlfn_s_x4": 32.241}
# SSIM-Y measured here with this evaluator (regression values; RCAN's paper gives 0.9002).
SSIM_SET5_X4 = {"rlfn_x4": 0.89526, "rlfn_s_x4": 0.89544}


def _save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)  # (H, W) -> L, (H, W, 2) -> LA, (H, W, 4) -> RGBA
    return path


def _pair_root(root: Path, scale: int, items: dict[str, tuple[tuple[int, int], tuple[int, int] | None]]) -> Path:
    """``items``: name -> (HR (h, w), LR (h, w) or None for a missing partner); random pixels."""
    rng = np.random.default_rng(0)
    for name, (hr, lr) in items.items():
        _save(rng.integers(0, 256, (*hr, 3), dtype=np.uint8), root / "HR" / f"x{scale}" / f"{name}.png")
        if lr is not None:
            _save(rng.integers(0, 256, (*lr, 3), dtype=np.uint8), root / "LR" / f"x{scale}" / f"{name}.png")
        else:
            (root / "LR" / f"x{scale}").mkdir(parents=True, exist_ok=True)
    return root


# ------------------------------------------------------------------------------------ metrics


def test_metric_reproduces_rcan_paper(set5_dir):
    from skimage.metrics import structural_similarity

    psnrs, ssims = [], []
    for hr_path in sorted((set5_dir / "HR" / "x4").glob("*.png")):
        hr = read_image(hr_path)
        sr = read_image(set5_dir / "RCAN_output" / "x4" / hr_path.name)
        p, s = psnr_ssim_y(sr, hr, 4)
        assert p == pytest.approx(psnr_y(sr, hr, 4)) and s == pytest.approx(ssim_y(sr, hr, 4))
        y_sr, y_hr = crop_border(rgb_to_y(sr), 4), crop_border(rgb_to_y(hr), 4)
        ref = structural_similarity(y_sr, y_hr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert s == pytest.approx(ref, abs=1e-9)
        psnrs.append(p)
        ssims.append(s)
    assert len(psnrs) == 5
    assert abs(np.mean(psnrs) - RCAN_SET5_X4) < 0.005, np.mean(psnrs)
    assert abs(np.mean(ssims) - 0.9002) < 0.0005, np.mean(ssims)


def test_metric_conventions():
    white, black = np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4, 3), np.uint8)
    assert np.allclose(rgb_to_y(white), 235.0) and np.allclose(rgb_to_y(black), 16.0)
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert psnr_y(hr, hr, 4) == math.inf and ssim_y(hr, hr, 4) == pytest.approx(1.0)
    # Float SR output is clamped and rounded to uint8 before the metric; tensors (3, H, W) work too.
    sr = hr.astype(np.float64) / 255 + rng.normal(0, 0.05, hr.shape)
    sr_u8 = np.round(np.clip(sr, 0, 1) * 255).astype(np.uint8)
    t = torch.from_numpy(sr).permute(2, 0, 1).float()
    assert psnr_y(t, hr, 4) == pytest.approx(psnr_y(sr_u8, hr, 4), abs=1e-9)
    assert psnr_y(sr, hr, 4) == pytest.approx(psnr_y(sr_u8, hr, 4), abs=1e-9)
    # PSNR by hand on the cropped Y channel.
    a, b = rgb_to_y(sr_u8)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    assert psnr_y(sr_u8, hr, 4) == pytest.approx(10 * np.log10(255**2 / np.mean((a - b) ** 2)))
    with pytest.raises(ValueError, match="differ in size"):
        psnr_y(hr[:-4], hr, 4)


# ------------------------------------------------------------------------- parity, evaluation


@pytest.mark.parametrize("name", ["rlfn_x4", "rlfn_s_x4"])
def test_upstream_parity_set5(name, upstream_dir, set5_dir):
    model = zoo.create(name, checkpoint_path=upstream_dir / "sr" / f"{name}.pth")
    r = evaluate_sr(model, set5_dir, 4)
    assert r["num_images"] == 5 and len(r["per_image"]) == 5 and r["model"] == name and r["scale"] == 4
    assert abs(r["psnr_y"] - UPSTREAM_SET5_X4[name]) < 0.01, r["psnr_y"]
    assert abs(r["ssim_y"] - SSIM_SET5_X4[name]) < 1e-3, r["ssim_y"]
    assert r["psnr_y"] == pytest.approx(np.mean([x["psnr_y"] for x in r["per_image"]]))


def test_eval_main_json(upstream_dir, set5_dir, capsys):
    ckpt = upstream_dir / "sr" / "rlfn_s_x4.pth"
    rc = eval_main("sr", ["--model", "rlfn_s_x4", "--checkpoint", str(ckpt), "--data", str(set5_dir), "--scale", "4", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert len(out.strip().splitlines()) == 1
    res = json.loads(out)
    assert res["num_images"] == 5 and res["scale"] == 4
    assert abs(res["psnr_y"] - UPSTREAM_SET5_X4["rlfn_s_x4"]) < 0.01
    assert abs(res["ssim_y"] - SSIM_SET5_X4["rlfn_s_x4"]) < 1e-3
    assert [x["name"] for x in res["per_image"]] == ["baby", "bird", "butterfly", "head", "woman"]


class _LocalSR(torch.nn.Module):
    """Two 3x3 convs and a pixel shuffle: a receptive field of 2 LR pixels."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.PixelShuffle(2)
        )

    def forward(self, x):
        return self.body(x)


def test_tiled_inference():
    local = _LocalSR().eval()
    lr = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        full = local(lr)
    tiled = upscale_tiled(local, lr, tile=16, overlap=4)
    assert tiled.shape == full.shape == (1, 3, 74, 100)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)  # overlap >= receptive field: equal
    # RLFN's ESA pools over the whole tile, so tiles differ slightly from the full image.
    rlfn = zoo.create("rlfn_s_x4").eval()
    lr = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        full = rlfn(lr)
    tiled = upscale_tiled(rlfn, lr, tile=24, overlap=8)
    assert tiled.shape == (1, 3, 160, 224)
    assert torch.isfinite(tiled).all()
    assert (tiled - full).abs().mean() < 0.05


# ----------------------------------------------------------------------------- data, bad input


def test_read_grey_rgba_palette_16bit(tmp_path):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    g = read_image(_save(grey, tmp_path / "g.png"))
    assert g.shape == (9, 11, 3) and g.dtype == np.uint8
    assert all(np.array_equal(g[..., c], grey) for c in range(3))
    a = read_image(_save(rgba, tmp_path / "a.png"))
    assert a.shape == (9, 11, 3) and np.array_equal(a, rgba[..., :3])
    la = read_image(_save(np.ascontiguousarray(rgba[..., :2]), tmp_path / "la.png"))
    assert la.shape == (9, 11, 3) and np.array_equal(la[..., 1], rgba[..., 0])
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (9, 11, 3)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    g16 = read_image(tmp_path / "g16.png")
    assert g16.shape == (9, 11, 3) and np.array_equal(g16[..., 0], grey)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(bad)


def test_paired_dataset_modcrop_and_errors(tmp_path):
    root = _pair_root(tmp_path / "ok", 4, {"a": ((43, 41), (10, 10)), "b": ((40, 48), (10, 12))})
    ds = SRPairedDataset(root, 4)
    assert len(ds) == 2
    item = ds[0]
    assert item["name"] == "a" and item["lr"].shape == (3, 10, 10) and item["hr"].shape == (3, 40, 40)
    assert item["hr"].dtype == torch.float32 and 0 <= item["hr"].min() and item["hr"].max() <= 1
    # mod-crop keeps the top-left corner
    full = read_image(root / "HR" / "x4" / "a.png")
    assert np.array_equal(to_uint8_image(item["hr"]), full[:40, :40])

    small = _pair_root(tmp_path / "small", 4, {"a": ((30, 40), (10, 10))})
    with pytest.raises(ValueError, match="smaller than LR"):
        SRPairedDataset(small, 4)[0]

    missing = _pair_root(tmp_path / "missing", 4, {"a": ((40, 40), (10, 10)), "b": ((40, 40), None)})
    with pytest.raises(FileNotFoundError, match="no LR partner"):
        SRPairedDataset(missing, 4)

    with pytest.raises(FileNotFoundError, match="x2"):
        SRPairedDataset(root, 2)


def test_eval_main_usage_errors(tmp_path, capsys):
    root = _pair_root(tmp_path / "bench", 4, {"a": ((40, 40), (10, 10))})
    cases = [
        ("sr", ["--model", "rlfn_x2", "--data", str(root), "--scale", "2"], "HR folder"),  # no x2 folders
        ("sr", ["--model", "rlfn_x4", "--data", str(tmp_path / "nope"), "--scale", "4"], "does not exist"),
        ("sr", ["--model", "rlfn_x4", "--data", str(root)], "--scale"),
        ("sr", ["--model", "rlfn_x4", "--data", str(root), "--scale", "2"], "x4"),
        ("sr", ["--model", "rlfn_x4", "--checkpoint", str(tmp_path / "no.pth"), "--data", str(root), "--scale", "4"], "no.pth"),
        ("nope", ["--model", "rlfn_x4"], "unknown task"),
    ]
    for task, argv, needle in cases:
        assert eval_main(task, argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert captured.out == ""
        assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert train_main("nope", []) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown task")


def test_train_dataset_bicubic_patches(tmp_path):
    rng = np.random.default_rng(3)
    _save(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), tmp_path / "hr" / "sub" / "a.png")
    _save(rng.integers(0, 256, (80, 64), dtype=np.uint8), tmp_path / "hr" / "b.jpg")
    ds = SRTrainDataset(tmp_path / "hr", scale=3, patch_size=16, repeat=4)
    assert len(ds) == 8  # two images (found recursively) x 4
    for i in range(4):
        item = ds[i]
        assert item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 48, 48)
        # LR is PIL's bicubic downsampling of the (augmented) HR crop.
        hr = Image.fromarray(to_uint8_image(item["hr"]))
        lr = np.asarray(hr.resize((16, 16), Image.BICUBIC))
        assert np.array_equal(to_uint8_image(item["lr"]), lr)
    with pytest.raises(ValueError, match="smaller than the HR patch"):
        SRTrainDataset(tmp_path / "hr", scale=4, patch_size=20)[0]
    with pytest.raises(FileNotFoundError):
        SRTrainDataset(tmp_path / "empty", scale=4, patch_size=8)
    with pytest.raises(FileNotFoundError, match="training folder"):
        SRDataModule(train_dir=str(tmp_path / "nope"))


def test_task_registry_and_module():
    spec = get_task("sr")
    module_cls, datamodule_cls, eval_fn = TASKS["sr"]
    assert (module_cls, datamodule_cls, eval_fn) == (SRModule, SRDataModule, evaluate_sr) == tuple(spec)
    assert "sr" in TASKS and list(TASKS) == sorted(TASKS)
    with pytest.raises(KeyError, match="known tasks"):
        get_task("nope")
    m = SRModule(model="rlfn_s_x4", model_args={"num_blocks": 1}, lr=1e-3, step_size=7, gamma=0.25)
    assert isinstance(m, ZooModule) and m.scale == 4 and m.net.num_blocks == 1
    assert m.hparams.model == "rlfn_s_x4" and m.hparams.lr == 1e-3 and m.hparams.model_args == {"num_blocks": 1}
    cfg = m.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.999)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 7 and sched.gamma == 0.25
    assert cfg["lr_scheduler"]["interval"] == "step"
    m = SRModule(model="rlfn_s_x4", model_args={"num_blocks": 1}, scheduler="cosine", t_max=100, eta_min=0.0)
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 100


@pytest.mark.parametrize("name", ["rlfn_x4", "rlfn_s_x4"])
def test_shipped_configs_parse(name, capsys):
    # `-c sr/NAME.yaml` is found inside the installed zoo.configs package, from any folder.
    assert train_main("sr", ["-c", f"sr/{name}.yaml", "--print_config"]) == 0
    import yaml

    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model"] == name and cfg["model"]["lr"] == 5e-4
    assert cfg["model"]["step_size"] == 200_000 and cfg["model"]["gamma"] == 0.5
    assert cfg["data"]["batch_size"] == 64 and cfg["data"]["patch_size"] == 64 and cfg["data"]["scale"] == 4
    assert (ROOT / "configs" / "sr" / f"{name}.yaml").is_file()


# ----------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """HR training images from scikit-image's bundled photos and a paired x4 val folder."""
    import skimage.data

    root = tmp_path_factory.mktemp("sr_data")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        _save(getattr(skimage.data, name)(), root / "train" / f"{name}.png")
    hr = Image.fromarray(skimage.data.immunohistochemistry()[:128, :96])
    hr.save(_make_dirs(root / "val" / "HR" / "x4") / "ihc.png")
    hr.resize((24, 32), Image.BICUBIC).save(_make_dirs(root / "val" / "LR" / "x4") / "ihc.png")
    return {"train": root / "train", "val": root / "val", "root": root}


def _make_dirs(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _tiny_args(data: dict[str, Path], out: Path) -> list[str]:
    return [
        "-c", "configs/sr/rlfn_x4.yaml",
        f"--data.train_dir={data['train']}",
        "--data.batch_size=8", "--data.patch_size=24", "--data.num_workers=0", "--data.repeat=8", "--data.cache=true",
        "--model.model_args={channels: 16, num_blocks: 2}",
        "--trainer.accelerator=cpu", "--trainer.devices=1",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_data) -> dict[str, Path]:
    out = tiny_data["root"] / "run"
    args = _tiny_args(tiny_data, out) + [
        f"--data.val_dir={tiny_data['val']}",
        "--model.lr=0.002", "--model.scheduler=cosine",
        "--trainer.max_steps=40", "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=40",
    ]  # fmt: skip
    assert train_main("sr", args) == 0
    (version,) = sorted((out / "logs").glob("version_*"))
    return {"metrics": version / "metrics.csv", "ckpt": version / "checkpoints" / "last.ckpt", "dir": version}


def test_train_main_usage_errors(tiny_data, tmp_path, capsys):
    base = _tiny_args(tiny_data, tmp_path / "run") + ["--trainer.max_steps=1"]
    cases = [
        (base + ["--data.scale=2"], "data.scale is 2"),  # model rlfn_x4 upscales x4
        (base + [f"--data.train_dir={tmp_path / 'nope'}"], "training folder"),
        (base + ["--trainer.max_stepz=3"], "max_stepz"),
        (base + ["--model.model=rlfnx4"], "unknown model"),
        (["-c", "sr/nope.yaml"], "config file"),
    ]
    for argv, needle in cases:
        assert train_main("sr", argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and needle in err[-1], err


@pytest.mark.slow
def test_training_loss_falls(trained):
    with open(trained["metrics"]) as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)
    val = [float(r["val/psnr_y"]) for r in rows if r.get("val/psnr_y")]
    ssim = [float(r["val/ssim_y"]) for r in rows if r.get("val/ssim_y")]
    assert len(val) == 1 and 15.0 < val[0] < 45.0 and 0.0 < ssim[0] <= 1.0
    assert trained["ckpt"].is_file() and (trained["dir"] / "config.yaml").is_file()


@pytest.mark.slow
def test_lightning_checkpoint_reloads_and_evaluates(trained, tiny_data, capsys):
    ckpt = trained["ckpt"]
    module = SRModule.load_from_checkpoint(ckpt)
    assert module.hparams.model == "rlfn_x4" and module.hparams.model_args == {"channels": 16, "num_blocks": 2}
    direct = evaluate_sr(module.net, tiny_data["val"], 4)
    rc = eval_main("sr", ["--model", "rlfn_x4", "--checkpoint", str(ckpt), "--data", str(tiny_data["val"]), "--scale", "4", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_images"] == 1 and res["psnr_y"] == pytest.approx(direct["psnr_y"], abs=1e-9)
    # the table form
    assert eval_main("sr", ["--model", "rlfn_x4", "--checkpoint", str(ckpt), "--data", str(tiny_data["val"]), "--scale", "4"]) == 0
    table = capsys.readouterr().out
    assert "ihc" in table and f"{direct['psnr_y']:.4f}" in table
    # a checkpoint of another architecture is refused
    assert eval_main("sr", ["--model", "rlfn_s_x4", "--checkpoint", str(ckpt), "--data", str(tiny_data["val"]), "--scale", "4"]) == 2
    assert "trained for model 'rlfn_x4'" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_training_subprocess(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    args = _tiny_args(tiny_data, out)
    args = [a for a in args if not a.startswith("--trainer.devices")] + [
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=3", "--data.batch_size=4",
    ]  # fmt: skip
    code = "from zoo.tasks.cli import train_main; import sys; sys.exit(train_main('sr', sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = list(out.rglob("*.ckpt"))
    assert ckpts, proc.stderr[-3000:]
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert state["global_step"] == 3 and "Starting with 2 processes" in proc.stderr + proc.stdout


def test_fft_loss_and_cosine_restarts():
    """SAFMN's FFT loss and PAN's restarted cosine, as their recipes use them."""
    from zoo.tasks.sr.module import fft_l1_loss

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    fa, fb = torch.fft.fft2(a.double()), torch.fft.fft2(b.double())
    ref = torch.cat([(fa.real - fb.real).abs().flatten(), (fa.imag - fb.imag).abs().flatten()]).mean()
    assert float(fft_l1_loss(a, b)) == pytest.approx(float(ref), rel=1e-5)
    assert float(fft_l1_loss(a, a)) == 0.0
    m = SRModule(model="rlfn_s_x4", model_args={"num_blocks": 1}, lr=1e-3, scheduler="cosine_restarts", t_max=4, eta_min=0.0)
    cfg = m.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[4] == lrs[8] == pytest.approx(1e-3) and lrs[2] == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="needs t_max"):
        SRModule(model="rlfn_s_x4", model_args={"num_blocks": 1}, scheduler="cosine_restarts").configure_optimizers()
