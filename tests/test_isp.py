"""The ISP task: the unprocessing simulator, Zurich folders, the ISP models, `zoo train isp`
(paired: the network learns to invert the simulator; unpaired: a GAN smoke test) and
`zoo eval isp`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.tasks.base import TASKS, TaskConfigError
from zoo.tasks.cli import eval_main, load_eval_model, train_main
from zoo.tasks.isp.data import ISPDataModule, SimulatedISPDataset, UnpairedDataset, ZurichDataset
from zoo.tasks.isp.evaluate import evaluate_isp, psnr_ssim_rgb
from zoo.tasks.isp.module import ISPModule, gaussian_blur_kernel, lab_lightness
from zoo.tasks.isp.unprocess import (
    mosaic,
    pack_bayer,
    process,
    process_packed,
    random_metadata,
    simulate_raw,
    unpack_bayer,
    unprocess,
)

ROOT = Path(__file__).resolve().parents[1]
ISP_MODELS = zoo.list_models(task="isp")


@pytest.fixture()
def one_thread():
    """Small tensors: one intra-op thread is ~10x faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _photo(name: str, scale: int = 2) -> torch.Tensor:
    import skimage.data

    img = Image.fromarray(getattr(skimage.data, name)())
    img = img.resize((img.width // scale, img.height // scale), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


# -------------------------------------------------------------------------------- simulator


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_unprocess_process_round_trip(name, one_thread):
    x = _photo(name)
    for seed in (0, 1, 2):
        linear, meta = unprocess(x, generator=torch.Generator().manual_seed(seed))
        assert linear.shape == x.shape and 0 <= linear.min() and linear.max() <= 1
        back = process(linear, meta)
        assert (back - x).abs().max() < 1e-4, (name, seed)
    # Highlights (grey > 0.9: the safe gains' mask is active) are inverted exactly too.
    bright = torch.stack([torch.full((8, 8), v) for v in (0.99, 0.97, 0.93)])
    linear, meta = unprocess(bright, generator=torch.Generator().manual_seed(4))
    assert (process(linear, meta) - bright).abs().max() < 1e-4
    # Demosaic-free processing of the packed RAW gives the half-resolution image.
    flat = torch.rand(3, 1, 1).expand(3, 16, 16)
    raw, meta = simulate_raw(flat, torch.Generator().manual_seed(5), noise=False)
    half = process_packed(raw, meta)
    assert half.shape == (3, 8, 8) and (half - flat[:, :8, :8]).abs().max() < 1e-4


def test_simulator_metadata_ranges_layout_and_noise():
    g = torch.Generator().manual_seed(0)
    metas = [random_metadata(g) for _ in range(50)]
    for m in metas:
        assert torch.allclose(m.rgb2cam.sum(-1), torch.ones(3, dtype=torch.float64))
        assert torch.allclose(m.cam2rgb @ m.rgb2cam, torch.eye(3, dtype=torch.float64), atol=1e-10)
        assert 1.9 <= m.red_gain <= 2.4 and 1.5 <= m.blue_gain <= 1.9 and m.rgb_gain > 0
        assert 1e-4 <= m.shot_noise <= 0.012 and m.read_noise > 0
    # Deterministic with a generator; different seeds differ.
    x = _photo("chelsea", 4)[:, :36, :50]
    a, _ = simulate_raw(x, torch.Generator().manual_seed(7))
    b, _ = simulate_raw(x, torch.Generator().manual_seed(7))
    c, _ = simulate_raw(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 18, 25) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    # RGGB layout: (R, G_r, G_b, B) = pixels (0, 0), (0, 1), (1, 0), (1, 1) of each cell.
    clean, meta = simulate_raw(x, torch.Generator().manual_seed(7), noise=False)
    linear, _ = unprocess(x, meta)
    assert torch.equal(clean[0], linear[0, 0::2, 0::2]) and torch.equal(clean[1], linear[1, 0::2, 1::2])
    assert torch.equal(clean[2], linear[1, 1::2, 0::2]) and torch.equal(clean[3], linear[2, 1::2, 1::2])
    assert torch.equal(mosaic(linear), clean)
    bayer = torch.arange(6 * 8.0).reshape(6, 8)
    assert torch.equal(unpack_bayer(pack_bayer(bayer)), bayer) and pack_bayer(bayer)[:, 0, 0].tolist() == [0, 1, 8, 9]
    # Shot / read noise: std matches sqrt(x * shot + read) on a flat grey image.
    flat = torch.full((3, 256, 256), 0.5)
    noisy, meta = simulate_raw(flat, torch.Generator().manual_seed(9))
    clean = mosaic(unprocess(flat, meta)[0])
    expected = (clean * meta.shot_noise + meta.read_noise).sqrt().mean()
    assert abs((noisy - clean).std() / expected - 1) < 0.05
    with pytest.raises(ValueError, match="even"):
        mosaic(torch.rand(3, 5, 6))
    with pytest.raises(ValueError, match="RGB image"):
        unprocess(torch.rand(4, 8, 8))


def test_simulated_dataset(tmp_path):
    Image.fromarray((_photo("coffee", 4).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    ds = SimulatedISPDataset(tmp_path, patch_size=32, repeat=3, seed=1)
    assert len(ds) == 3
    item = ds[0]
    assert item["raw"].shape == (4, 16, 16) and item["rgb"].shape == (3, 32, 32) and item["name"] == "a"
    assert torch.equal(ds[0]["raw"], item["raw"])  # seeded: the same item every time
    whole = SimulatedISPDataset(tmp_path, None, augment=False, seed=0, max_size=64)[0]
    assert whole["rgb"].shape == (3, 64, 64) and whole["raw"].shape == (4, 32, 32)
    with pytest.raises(ValueError, match="smaller than the patch"):
        SimulatedISPDataset(tmp_path, patch_size=512)[0]
    with pytest.raises(ValueError, match="even"):
        SimulatedISPDataset(tmp_path, patch_size=31)


# ----------------------------------------------------------------------------------- Zurich


def _zurich(root: Path, split: str, n: int = 2, size: int = 32, seed: int = 0) -> Path:
    """A tiny Zurich RAW-to-RGB split: 10-bit Bayer values in 16-bit PNGs, JPEG targets."""
    rng = np.random.default_rng(seed)
    (root / split / "huawei_raw").mkdir(parents=True, exist_ok=True)
    (root / split / "canon").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bayer = rng.integers(0, 1024, (size, size), dtype=np.uint16)
        Image.fromarray(bayer).save(root / split / "huawei_raw" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / "canon" / f"{i}.jpg")
    return root


def test_zurich_folder(tmp_path, one_thread):
    root = _zurich(tmp_path / "zrr", "train", n=3)
    _zurich(root, "test", n=1, seed=1)
    ds = ZurichDataset(root, "train")
    assert len(ds) == 3 and [p[0].stem for p in ds.pairs] == ["0", "1", "2"]
    item = ds[1]
    bayer = np.asarray(Image.open(root / "train" / "huawei_raw" / "1.png")).astype(np.float32)
    assert item["raw"].shape == (4, 16, 16) and item["rgb"].shape == (3, 32, 32)
    want = np.stack([bayer[0::2, 0::2], bayer[0::2, 1::2], bayer[1::2, 0::2], bayer[1::2, 1::2]]) / 1020
    assert np.allclose(item["raw"].numpy(), np.clip(want, 0, 1), atol=1e-7)  # PyNET's raw / (4 * 255), clipped
    # Crops stay aligned: RAW offsets on the 2x2 grid, RGB at twice the offset.
    crop = ZurichDataset(root, "train", patch_size=12, seed=3)[1]
    assert crop["raw"].shape == (4, 6, 6) and crop["rgb"].shape == (3, 12, 12)
    hits = [(y, x) for y in range(11) for x in range(11) if torch.equal(item["raw"][:, y : y + 6, x : x + 6], crop["raw"])]
    assert hits and any(torch.equal(item["rgb"][:, 2 * y : 2 * y + 12, 2 * x : 2 * x + 12], crop["rgb"]) for y, x in hits)
    # A split folder given directly; black / white levels.
    lv = ZurichDataset(root / "test", "test", black_level=64, white_level=1023)[0]["raw"]
    assert lv.min() >= 0 and lv.max() <= 1
    # Errors.
    (root / "train" / "canon" / "2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="no target"):
        ZurichDataset(root, "train")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "train" / "canon" / "2.jpg")
    with pytest.raises(ValueError, match="aligned"):
        ZurichDataset(root, "train")[2]
    with pytest.raises(FileNotFoundError, match="huawei_raw"):
        ZurichDataset(tmp_path / "nothing", "train")
    # Unpaired: RAW from Zurich, targets from the (independently drawn) Canon images.
    un = UnpairedDataset(ZurichDataset(root, "train", patch_size=16, with_target=False), root / "test" / "canon", seed=0)
    u = un[0]
    assert set(u) == {"raw", "raw_rgb", "target"} and u["raw"].shape == (4, 8, 8)
    assert u["raw_rgb"].shape == u["target"].shape == (3, 16, 16) and 0 <= u["raw_rgb"].min() and u["raw_rgb"].max() <= 1
    dm = ISPDataModule(str(root), str(root), mode="zurich", pairing="unpaired", patch_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["raw"].shape == (2, 4, 8, 8) and batch["target"].shape == (2, 3, 16, 16)
    assert next(iter(dm.val_dataloader()))["rgb"].shape == (1, 3, 32, 32)
    # evaluate_isp on the Zurich layout.
    r = evaluate_isp(zoo.create("isp_llisp"), root, mode="zurich", split="test")
    assert r["num_images"] == 1 and np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1


# ----------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ISP_MODELS)
def test_isp_model_contract(name, one_thread):
    m = zoo.create(name)
    card = zoo.info(name)
    assert card["task"] == "isp" and card["input_size"] == [4, 256, 256]
    x = torch.rand(2, 4, 40, 24)
    m.eval()
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 3, 80, 48) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="expected 4 channels"):
        m(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        m(torch.rand(4, 16, 16))
    with pytest.raises(ValueError, match="floating-point"):
        m(torch.zeros(1, 4, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected values in"):
        m(torch.rand(1, 4, 16, 16) * 1023)


def test_microisp_structure_and_bayer_order_filter(one_thread):
    from zoo.models.isp import MicroISPAttention, filter_pynet_bayer_order

    m = zoo.create("isp_microisp")
    branch = m.generator1.branches[0]
    assert len(m.generator1.branches) == len(m.generator2.branches) == 3
    assert len(branch.convs) == len(branch.acts) == 7 and len(branch.attention) == 2
    assert sum(p.numel() for p in m.parameters()) == 13_560
    assert set(zoo.create("isp_llisp").state_dict()) == {f"conv{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")}
    # The attention pads tiny maps only: from 79 pixels on it is the plain strided stack.
    att = MicroISPAttention()
    big = torch.randn(1, 4, 81, 80)
    assert att(big).shape == (1, 4, 1, 1) and att(torch.randn(1, 4, 9, 9)).shape == (1, 4, 1, 1)
    # Weights trained on PyNET's (B, Gb, R, Gr) stacking give the same output on RGGB input.
    x = torch.rand(1, 4, 20, 20)
    pynet_x = x[:, [3, 1, 0, 2]]
    for name in ("isp_llisp", "isp_microisp"):
        torch.manual_seed(1)
        upstream = zoo.create(name).eval()
        for p in upstream.parameters():  # MicroISP's own init is nearly constant: perturb it
            p.data.add_(0.3 * torch.randn_like(p))
        ours = zoo.create(name).eval()
        ours.load_state_dict(filter_pynet_bayer_order(upstream.state_dict()))
        with torch.no_grad():
            torch.testing.assert_close(ours(x), upstream(pynet_x), atol=1e-5, rtol=0)
            assert not torch.allclose(ours(x), upstream(x))


# ------------------------------------------------------------------------------------- task


def test_task_registry_configs_and_helpers(capsys):
    spec = TASKS["isp"]
    assert (spec.module_cls, spec.datamodule_cls, spec.eval_fn) == (ISPModule, ISPDataModule, evaluate_isp)
    with pytest.raises(TaskConfigError, match="not an ISP model"):
        ISPModule(model="rlfn_s_x4")
    import yaml

    for cfg, model, recipe in (("isp_microisp_paired", "isp_microisp", "paired"), ("isp_llisp_unpaired", "isp_llisp", "unpaired")):
        assert (ROOT / "configs" / "isp" / f"{cfg}.yaml").is_file()
        assert train_main("isp", ["-c", f"isp/{cfg}.yaml", "--print_config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["model"] == model and printed["model"]["recipe"] == recipe
    assert lab_lightness(torch.ones(1, 3, 2, 2)).allclose(torch.tensor(100.0), atol=1e-3)
    assert lab_lightness(torch.zeros(1, 3, 2, 2)).abs().max() < 1e-4
    k = gaussian_blur_kernel()
    assert k.shape == (21, 21) and abs(float(k.sum()) - 1) < 1e-6 and k[10, 10] == k.max()
    img = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    assert psnr_ssim_rgb(img, img)[0] == float("inf") and psnr_ssim_rgb(img, img)[1] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Training photos and a held-out validation photo from scikit-image, downsized by 2."""
    root = tmp_path_factory.mktemp("isp_data")
    for split, names in (("train", ("astronaut", "coffee", "chelsea")), ("val", ("rocket",))):
        (root / split).mkdir()
        for name in names:
            Image.fromarray((_photo(name).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(root / split / f"{name}.png")
    return {"train": root / "train", "val": root / "val", "root": root}


def _args(photos: dict[str, Path], out: Path, config: str) -> list[str]:
    return [
        "-c", config, f"--data.train_dir={photos['train']}", "--data.mode=simulated", "--data.num_workers=0",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(photos) -> dict:
    """`zoo train isp`: isp_llisp learns to invert the simulator (400 steps, ~10 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        before = evaluate_isp(zoo.create("isp_llisp"), photos["val"], mode="simulated", seed=0)
        out = photos["root"] / "run"
        args = _args(photos, out, "isp/isp_microisp_paired.yaml") + [
            "--model.model=isp_llisp", "--model.lr=0.003", "--model.ms_ssim_weight=0",
            "--data.batch_size=8", "--data.patch_size=64", "--data.repeat=64", "--data.cache=true",
            f"--data.val_dir={photos['val']}", "--data.val_size=128",
            "--trainer.max_steps=400", "--trainer.val_check_interval=400",
        ]  # fmt: skip
        assert train_main("isp", args) == 0
    finally:
        torch.set_num_threads(n)
    (version,) = sorted((out / "logs").glob("version_*"))
    return {"before": before, "metrics": version / "metrics.csv", "ckpt": version / "checkpoints" / "last.ckpt"}


@pytest.mark.slow
def test_paired_training_learns_the_inverse_simulator(trained, photos, capsys):
    with open(trained["metrics"]) as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 400
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.5 * first, (first, last)
    val = [float(r["val/psnr"]) for r in rows if r.get("val/psnr")]
    assert len(val) == 1
    # `zoo eval isp --json` on the held-out photo: clearly better than the untrained network.
    rc = eval_main("isp", ["--model", "isp_llisp", "--checkpoint", str(trained["ckpt"]), "--data", str(photos["val"]),
                           "--mode", "simulated", "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and len(out.strip().splitlines()) == 1
    after = json.loads(out)
    assert after["num_images"] == 1 and after["mode"] == "simulated" and 0 < after["ssim"] <= 1
    assert after["psnr"] > trained["before"]["psnr"] + 4.0, (trained["before"]["psnr"], after["psnr"])
    assert after["ssim"] > trained["before"]["ssim"] + 0.2
    direct = evaluate_isp(load_eval_model("isp_llisp", str(trained["ckpt"])), photos["val"], mode="simulated", seed=0)
    assert direct["psnr"] == pytest.approx(after["psnr"], abs=1e-9)


def test_train_main_usage_errors(photos, tmp_path, capsys):
    base = _args(photos, tmp_path / "run", "isp/isp_microisp_paired.yaml") + ["--trainer.max_steps=1", "--data.patch_size=32"]
    cases = [
        (base + ["--data.pairing=unpaired"], "data.pairing is 'unpaired'"),
        (base + ["--model.model=rlfn_s_x4"], "not an ISP model"),
        (base + [f"--data.train_dir={tmp_path / 'nope'}"], "training folder"),
    ]
    for argv, needle in cases:
        assert train_main("isp", argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and needle in err[-1], err


def test_eval_main_usage_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["--model", "isp_llisp", "--data", str(tmp_path / "nope")], "does not exist"),
        (["--model", "isp_llisp", "--data", str(tmp_path / "empty")], "huawei_raw"),
        (["--model", "isp_llisp", "--data", str(tmp_path / "empty"), "--mode", "other"], "mode"),
    ]
    for argv, needle in cases:
        assert eval_main("isp", argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err, err


@pytest.mark.slow
def test_unpaired_training_smoke(photos, one_thread):
    """The unpaired recipe for 3 steps with random-init feature networks: G and D losses finite,
    every discriminator stepped, the checkpoint reloads."""
    out = photos["root"] / "unpaired"
    args = _args(photos, out, "isp/isp_llisp_unpaired.yaml") + [
        "--data.batch_size=2", "--data.patch_size=64", f"--data.val_dir={photos['val']}", "--data.val_size=64",
        "--model.feature_weights=random", "--model.color_net=vit_tiny_patch16_224", "--model.disc_every=2",
        "--trainer.max_steps=3", "--trainer.val_check_interval=3",
    ]  # fmt: skip
    assert train_main("isp", args) == 0
    (version,) = sorted((out / "logs").glob("version_*"))
    with open(version / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    g = [float(r["train/g_loss"]) for r in rows if r.get("train/g_loss")]
    d = [[float(r[f"train/d_loss{i}"]) for r in rows if r.get(f"train/d_loss{i}")] for i in range(3)]
    assert len(g) == 3 and all(np.isfinite(g))
    assert all(len(x) == 2 and np.all(np.isfinite(x)) for x in d), d  # steps 0 and 2 of 3 (disc_every=2)
    for key in ("train/content", "train/tv", "train/gan0", "train/gan1", "train/gan2", "val/psnr"):
        assert any(r.get(key) for r in rows), key
    ckpt = version / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 3  # generator steps
    assert not any(k.startswith(("_nets", "vit", "features")) for k in state["state_dict"])  # no frozen nets saved
    module = ISPModule.load_from_checkpoint(ckpt)
    assert module.recipe == "unpaired" and len(module.discriminators) == 3
    assert module.discriminators[0].fc1.weight.shape[0] == 1024
    assert eval_main("isp", ["--model", "isp_llisp", "--checkpoint", str(ckpt), "--data", str(photos["val"]), "--mode", "simulated", "--json"]) == 0
