"""`zoo train image_codec` lowers the rate-distortion loss on built-in photos; `zoo eval
image_codec` measures bpp from the real bytes and scores JPEG / WebP at the same rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.hub import save_safetensors
from zoo.tasks.image_codec.evaluate import evaluate_image_codec, pillow_at_rate, psnr


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data as skd

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        img = Image.fromarray(getattr(skd, name)()).convert("RGB")
        img.resize((img.width // 2, img.height // 2), Image.BICUBIC).crop((0, 0, 176, 176)).save(root / f"{name}.png")
    return root


def test_train_lowers_the_rd_loss(photos, tmp_path):
    from zoo.tasks.image_codec.data import CodecImageDataset
    from zoo.tasks.image_codec.module import ImageCodecModule

    torch.manual_seed(0)
    module = ImageCodecModule("bmshj2018_factorized", model_args={"quality": 1}, lr=1e-4)
    opt = module.configure_optimizers()["optimizer"]
    ds = CodecImageDataset(photos, patch_size=64, repeat=4)
    batch = torch.stack([ds[i] for i in range(4)])
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = module.net.rate_distortion(batch, module.lmbda)
        (out["loss"] + out["aux_loss"]).backward()
        module.configure_gradient_clipping(opt)  # what Lightning calls: clip the main parameters
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert module.lmbda == 0.0018
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_train_cli_writes_a_checkpoint_that_reloads(photos, tmp_path):
    from zoo.tasks.cli import train_main
    from zoo.tasks.image_codec.module import ImageCodecModule

    rc = train_main("image_codec", [
        "-c", "image_codec/bmshj2018_hyperprior.yaml",
        "--model.model_args={quality: 1}", f"--data.train_dir={photos}", f"--data.val_dir={photos}",
        "--data.patch_size=64", "--data.batch_size=2", "--data.num_workers=0",
        "--trainer.max_steps=3", "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=null",
    ])
    assert rc == 0
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts
    m = ImageCodecModule.load_from_checkpoint(ckpts[-1], map_location="cpu").net.eval()
    x = torch.rand(1, 3, 64, 64)
    assert m.decompress_bytes(m.compress_bytes(x)).shape == x.shape


def test_eval_from_real_bytes_with_baselines(photos, tmp_path):
    torch.manual_seed(0)
    m = zoo.create("bmshj2018_factorized", quality=1).eval()
    res = evaluate_image_codec(m, photos, rd_plot=str(tmp_path / "rd.png"), max_images=2)
    assert res["images"] == 2
    for row in res["per_image"]:
        x = np.asarray(Image.open(photos / row["image"]))
        assert row["bpp"] == pytest.approx(8 * row["bytes"] / (x.shape[0] * x.shape[1]))
        assert row["ms_ssim"] is not None and 0 < row["ms_ssim"] <= 1
        # JPEG / WebP were tuned to the codec's rate
        assert abs(row["webp_bpp"] - row["bpp"]) < max(0.5 * row["bpp"], 0.2)
    assert (tmp_path / "rd.png").stat().st_size > 1000
    # PSNR is the usual formula on uint8 values
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x, x + 1 / 255) == pytest.approx(10 * np.log10(255**2), abs=1e-9)


def test_pillow_at_rate_finds_the_rate():
    import skimage.data as skd

    x = torch.from_numpy(skd.astronaut()[:200, :200].copy()).permute(2, 0, 1)[None].float() / 255
    best = pillow_at_rate(x, "JPEG", 1.0)
    assert abs(best["bpp"] - 1.0) < 0.15
    assert 25 < best["psnr"] < 45


def test_eval_cli(photos, tmp_path, capsys):
    from zoo.cli import main as zoo_main

    torch.manual_seed(0)
    ckpt = save_safetensors(zoo.create("bmshj2018_factorized", quality=1).state_dict(), tmp_path / "c.safetensors")
    rc = zoo_main(["eval", "image_codec", "--model", "bmshj2018_factorized", "--checkpoint", str(ckpt), "--data", str(photos),
                   "--json", "--no-baselines"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["images"] == 3 and res["bpp"] > 0 and "jpeg_psnr" not in res
    assert zoo_main(["eval", "image_codec", "--model", "rlfn_x4", "--data", str(photos)]) == 2
