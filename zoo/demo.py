"""The main job on built-in data (``make demo`` / ``python -m zoo.demo``).

1. Writes scikit-image's bundled photos as a training folder (HR images) and holds two out as a
   paired x4 validation set (HR mod-cropped, LR by bicubic downsampling).
2. Trains RLFN x4 briefly with ``zoo train sr`` (LightningCLI, on CPU unless told otherwise).
3. Evaluates it against bicubic upscaling with the field's PSNR-Y / SSIM-Y.
4. Exports a hub folder, reloads it with ``local-dir:`` and checks the outputs are identical.
5. Upscales a held-out image and writes ``side_by_side.png`` (bicubic | RLFN trained here |
   the authors' RLFN when ``--authors-checkpoint`` is given | ground truth).
6. Prints a ``zoo bench`` table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

TRAIN = ["astronaut", "camera", "coins", "hubble_deep_field", "immunohistochemistry", "moon", "page", "rocket",
         "retina", "colorwheel", "text", "logo"]
VAL = ["chelsea", "coffee"]


class Bicubic(nn.Module):
    """The baseline every SR paper reports: bicubic interpolation, clamped to [0, 1]."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)


def _rgb(a: np.ndarray) -> Image.Image:
    img = Image.fromarray(a)
    return img.convert("RGB")


def write_data(root: Path, scale: int) -> tuple[Path, Path]:
    import skimage.data as skd

    train = root / "train_hr"
    val = root / "val"
    train.mkdir(parents=True, exist_ok=True)
    for name in TRAIN:
        _rgb(getattr(skd, name)()).save(train / f"{name}.png")
    for sub in (f"HR/x{scale}", f"LR/x{scale}"):
        (val / sub).mkdir(parents=True, exist_ok=True)
    for name in VAL:
        hr = _rgb(getattr(skd, name)())
        w, h = hr.size
        hr = hr.crop((0, 0, w - w % scale, h - h % scale))
        lr = hr.resize((hr.width // scale, hr.height // scale), Image.BICUBIC)
        hr.save(val / f"HR/x{scale}/{name}.png")
        lr.save(val / f"LR/x{scale}/{name}.png")
    return train, val


def _label(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 8 + 7 * len(text), 18), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return img


def side_by_side(model: nn.Module, val: Path, name: str, scale: int, out: Path, authors: nn.Module | None = None) -> Path:
    lr = Image.open(val / f"LR/x{scale}/{name}.png").convert("RGB")
    hr = Image.open(val / f"HR/x{scale}/{name}.png").convert("RGB")
    x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float() / 255
    nets = [("bicubic", Bicubic(scale)), ("demo training", model)] + ([("authors' weights", authors)] if authors is not None else [])
    with torch.no_grad():
        ys = [net(x).clamp(0, 1) for _, net in nets]
    tiles = [Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for y in ys] + [hr]
    labels = [label for label, _ in nets] + ["ground truth"]
    canvas = Image.new("RGB", (sum(t.width for t in tiles), hr.height))
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        canvas.paste(_label(tile.copy(), label), (i * hr.width, 0))
    canvas.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out")
    p.add_argument("--model", default="rlfn_x4")
    p.add_argument("--steps", type=int, default=300, help="training steps (patches of 32x32 LR, batch 16)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--authors-checkpoint", help="the authors' published file (e.g. rlfn_x4.pth): also evaluated and shown")
    a = p.parse_args(argv)

    import zoo
    from zoo.cli import table
    from zoo.cost import bench_model
    from zoo.tasks.cli import load_eval_model, train_main
    from zoo.tasks.sr.evaluate import evaluate_sr

    out = Path(a.out).resolve()
    scale = zoo.create(a.model).scale
    print(f"[1/6] writing scikit-image's bundled photos to {out / 'data'}")
    train_dir, val_dir = write_data(out / "data", scale)

    print(f"[2/6] training {a.model} for {a.steps} steps (zoo train sr)")
    run_dir = out / "train"
    rc = train_main("sr", [
        "-c", "sr/rlfn_x4.yaml",
        f"--model.model={a.model}",
        f"--data.train_dir={train_dir}", f"--data.val_dir={val_dir}", f"--data.scale={scale}",
        "--data.patch_size=32", "--data.batch_size=16", "--data.num_workers=0", "--data.repeat=50",
        "--model.lr=1e-3", "--model.scheduler=cosine",
        f"--trainer.max_steps={a.steps}", f"--trainer.accelerator={a.accelerator}", "--trainer.devices=1",
        f"--trainer.default_root_dir={run_dir}", f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.val_check_interval={max(a.steps // 2, 1)}", "--trainer.log_every_n_steps=10",
        "--trainer.check_val_every_n_epoch=null",
        "--trainer.enable_progress_bar=true",
    ])
    if rc != 0:
        print("training failed", file=sys.stderr)
        return rc
    ckpts = sorted(run_dir.rglob("*.ckpt"), key=lambda f: f.stat().st_mtime)
    if not ckpts:
        print(f"no checkpoint written under {run_dir}", file=sys.stderr)
        return 1
    model = load_eval_model(a.model, checkpoint=str(ckpts[-1])).eval()

    print("[3/6] evaluating against bicubic on the held-out photos (PSNR-Y / SSIM-Y, border cropped)")
    rows = []
    nets = [(f"{a.model} (trained here)", model), ("bicubic", Bicubic(scale))]
    authors = None
    if a.authors_checkpoint:
        authors = zoo.create(a.model, checkpoint_path=a.authors_checkpoint).eval()
        nets.insert(0, (f"{a.model} (authors' weights)", authors))
    for label, net in nets:
        r = evaluate_sr(net, val_dir, scale)
        rows.append({"model": label, "psnr_y": round(r["psnr_y"], 3), "ssim_y": round(r["ssim_y"], 4), "images": r["num_images"]})
    print(table(rows, ["model", "psnr_y", "ssim_y", "images"]))

    print("[4/6] exporting a hub folder and reloading it with local-dir:")
    from zoo.weights.publish import export_hub

    hub = export_hub(a.model, out / "hub" / a.model, model=model)
    reloaded = zoo.create(f"local-dir:{hub}").eval()
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        same = torch.equal(reloaded(x), model(x))
    print(f"    {hub}: {', '.join(sorted(f.name for f in hub.iterdir()))}; identical outputs: {same}")
    if not same:
        return 1

    print("[5/6] upscaling a held-out photo")
    png = side_by_side(reloaded, val_dir, VAL[0], scale, out / "side_by_side.png", authors)
    print(f"    wrote {png}")

    print("[6/6] zoo bench (CPU, card input size)")
    bench = [bench_model(n, repeats=3, warmup=1) for n in ("rlfn_x4", "rlfn_s_x4")]
    print(table(bench, ["model", "input_size", "params", "gmacs", "latency_ms", "peak_memory_mb", "threads"]))
    (out / "summary.json").write_text(json.dumps({"eval": rows, "bench": bench, "hub": str(hub)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
