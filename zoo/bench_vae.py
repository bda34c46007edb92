"""Decode speed of the VAE decoders beside their teachers, and encode/decode speed of the image codecs.

``zoo bench --decode NAME ...`` (or ``python -m zoo.bench_vae NAME ...``):

- a VAE decoder (task ``vae``) decodes the latent of a 512x512 image (``--size``; video decoders:
  ``--video-size 720x1280`` frames, ``--latent-frames`` latent frames) and, with ``teacher=True``,
  the teacher VAE's decoder from diffusers decodes the *same latent shape*. The teacher is built
  from its published architecture (:data:`TEACHERS`: the diffusers config of the VAE whose latent
  space the decoder reads) with random weights: decode time does not depend on the weight values,
  and nothing has to be downloaded. The ratio is teacher time / ours (> 1: ours is faster).
  TAESD / TAESDXL / TAESD3 / TAEF1 are also timed in diffusers' ``AutoencoderTiny`` (the authors'
  network as packaged in diffusers) with the same weights, and the outputs compared.
- an image codec (task ``image_codec``) compresses and decompresses a real 512x512 photo
  (scikit-image's astronaut) through its entropy coder: encode ms, decode ms, bytes and bpp.

Times are medians of ``repeats`` runs after ``warmup`` runs, batch 1, ``torch.inference_mode``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Sequence

import torch

__all__ = ["TEACHERS", "bench_decoder", "bench_codec", "bench_decode", "teacher_decoder", "diffusers_tiny_autoencoder"]

# Stable Diffusion's AutoencoderKL (stabilityai/sd-vae-ft-mse, SDXL's VAE has the same layout)
_SD = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
# SD3's and FLUX.1's: the same network with 16 latent channels and no quant convs
_SD3 = {**_SD, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}

# zoo decoder -> (diffusers class, config: None = the class defaults, which are the published
# model's, what the teacher is)
TEACHERS: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "taesd": ("AutoencoderKL", _SD, "Stable Diffusion 1.x/2.x VAE (sd-vae-ft-mse)"),
    "taesdxl": ("AutoencoderKL", _SD, "SDXL VAE"),
    "taesd3": ("AutoencoderKL", _SD3, "Stable Diffusion 3 VAE"),
    "taef1": ("AutoencoderKL", _SD3, "FLUX.1 VAE"),
    "taef2": ("AutoencoderKLFlux2", None, "FLUX.2 VAE"),
    "turbo_vaed_hunyuan": ("AutoencoderKLHunyuanVideo", None, "HunyuanVideo VAE"),
    "turbo_vaed_cogvideox": ("AutoencoderKLCogVideoX", None, "CogVideoX VAE"),
    "turbo_vaed_ltx": ("AutoencoderKLLTXVideo", None, "LTX-Video VAE"),
}


def teacher_decoder(name: str) -> tuple[torch.nn.Module, str]:
    """The diffusers VAE whose latent space ``name`` decodes (random weights), and its label."""
    import diffusers

    if name not in TEACHERS:
        raise ValueError(f"no teacher VAE is known for {name} (known: {', '.join(sorted(TEACHERS))})")
    cls_name, config, label = TEACHERS[name]
    cls = getattr(diffusers, cls_name)
    torch.manual_seed(0)
    vae = cls(**config) if config is not None else cls()
    return vae.eval(), f"diffusers {cls_name} ({label})"


def diffusers_tiny_autoencoder(model: torch.nn.Module) -> torch.nn.Module:
    """diffusers' ``AutoencoderTiny`` (madebyollin's TAESD, as contributed to diffusers) holding
    ``model``'s weights: our decoder starts with the authors' ``Clamp`` module, which diffusers
    applies in ``forward`` instead, so its layer indices are ours minus one. It decodes to
    [-1, 1]; :func:`bench_decoder` maps that to [0, 1] to compare."""
    import diffusers

    if getattr(model, "midblock_gn", False):
        raise ValueError("diffusers' AutoencoderTiny has no mid-block GroupNorm branch (TAEF2)")
    sd = {}
    for key, value in model.state_dict().items():
        part, _, rest = key.partition(".")
        index, _, tail = rest.partition(".")
        if part == "decoder":
            index = str(int(index) - 1)
        sd[f"{part}.layers.{index}.{tail}"] = value
    tiny = diffusers.AutoencoderTiny(latent_channels=model.latent_channels)
    tiny.load_state_dict(sd, strict=True)
    return tiny.eval()


def _median_ms(fn, warmup: int, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def _video(model: torch.nn.Module) -> bool:
    return getattr(model, "temporal_stride", None) is not None


def _latent_shape(model: torch.nn.Module, size: tuple[int, int], video_size: tuple[int, int], latent_frames: int) -> tuple[int, ...]:
    from zoo.tasks.vae.evaluate import spatial_stride

    c = model.latent_channels
    if hasattr(model, "num_patches"):  # a token latent (RAE): the decoder's own image size
        return (1, model.num_patches, c)
    s = spatial_stride(model) or 8
    if _video(model):
        h, w = video_size
        return (1, c, latent_frames, -(-h // s), -(-w // s))
    h, w = size
    if h % s or w % s:
        raise ValueError(f"{h}x{w} is not a multiple of the decoder's stride {s}")
    return (1, c, h // s, w // s)


def bench_decoder(
    name: str,
    size: tuple[int, int] = (512, 512),
    video_size: tuple[int, int] = (720, 1280),
    latent_frames: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    teacher: bool = True,
    model: torch.nn.Module | None = None,
    teacher_repeats: int | None = None,
) -> dict[str, Any]:
    """Decode time of ``name`` (and of its teacher's decoder on the same latent shape;
    ``teacher_repeats`` timed runs, default ``repeats``)."""
    import zoo
    from zoo.cost import count_params

    if model is None:
        args = {}
        if name.startswith("rae_"):  # the decoder's image size follows the token grid: 448 / 14 * 16 = 512
            args["encoder_input_size"] = size[0] // 16 * 14
        model = zoo.create(name, **args)
    model = model.eval()
    shape = _latent_shape(model, size, video_size, latent_frames)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model.decode(z)
    row: dict[str, Any] = {
        "model": name, "kind": "decoder", "latent": list(shape), "output": list(out.shape[1:]),
        "params": count_params(model), "decode_ms": round(_median_ms(lambda: model.decode(z), warmup, repeats), 1),
    }
    frames = out.shape[2] if out.ndim == 5 else 1
    row["frames"] = frames
    tiny = None
    if name in ("taesd", "taesdxl", "taesd3", "taef1"):  # the authors' network as packaged in diffusers
        try:
            tiny = diffusers_tiny_autoencoder(model)
        except RuntimeError:  # another width than the published one: diffusers has no such config
            tiny = None
    if tiny is not None:
        with torch.inference_mode():
            row["authors_max_abs_diff"] = float((tiny.decode(z).sample.add(1).div(2) - out).abs().max())
        row["authors"] = "diffusers AutoencoderTiny"
        row["authors_decode_ms"] = round(_median_ms(lambda: tiny.decode(z), warmup, repeats), 1)
        row["speedup_vs_authors"] = round(row["authors_decode_ms"] / row["decode_ms"], 2)
    if teacher:
        vae, label = teacher_decoder(name)
        z_t = z.to(next(vae.parameters()).dtype)
        with torch.inference_mode():
            ref = vae.decode(z_t).sample
        row["teacher"] = label
        row["teacher_output"] = list(ref.shape[1:])
        row["teacher_params_decoder"] = sum(p.numel() for n, p in vae.named_parameters() if not n.startswith(("encoder.", "quant_conv.")))
        # the teacher's runs take seconds to minutes: the shape run above was its warm-up
        row["teacher_decode_ms"] = round(_median_ms(lambda: vae.decode(z_t), 0, teacher_repeats or repeats), 1)
        row["speedup_vs_teacher"] = round(row["teacher_decode_ms"] / row["decode_ms"], 2)
        del vae
    return row


def _photo(size: tuple[int, int]) -> torch.Tensor:
    import numpy as np
    import skimage.data
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut())).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def bench_codec(name: str, size: tuple[int, int] = (512, 512), warmup: int = 1, repeats: int = 3,
                model: torch.nn.Module | None = None, **model_args: Any) -> dict[str, Any]:
    """Encode (``compress_bytes``) and decode (``decompress_bytes``) time of an image codec on a photo."""
    import zoo
    from zoo.cost import count_params

    model = (model if model is not None else zoo.create(name, **model_args)).eval()
    if hasattr(model, "update"):
        model.update(force=True)
    x = _photo(size)
    with torch.inference_mode():
        data = model.compress_bytes(x)
        y = model.decompress_bytes(data)
    mse = float(((y.clamp(0, 1) - x) ** 2).mean())
    return {
        "model": name, "kind": "codec", "quality": getattr(model, "quality", None), "size": list(size),
        "params": count_params(model), "bytes": len(data), "bpp": round(8 * len(data) / (size[0] * size[1]), 4),
        "psnr": round(-10 * torch.log10(torch.tensor(mse)).item(), 2),
        "encode_ms": round(_median_ms(lambda: model.compress_bytes(x), warmup, repeats), 1),
        "decode_ms": round(_median_ms(lambda: model.decompress_bytes(data), warmup, repeats), 1),
    }


def bench_decode(names: Sequence[str], teacher: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`bench_decoder` for VAE decoders, :func:`bench_codec` for image codecs."""
    from zoo.registry import get_entry

    rows = []
    for name in names:
        task = get_entry(name).task
        if task == "vae":
            rows.append(bench_decoder(name, teacher=teacher and name in TEACHERS, **kwargs))
        elif task == "image_codec":
            keep = {k: v for k, v in kwargs.items() if k in ("size", "warmup", "repeats")}
            rows.append(bench_codec(name, **keep))
        else:
            raise ValueError(f"{name} is a {task} model: --decode times VAE decoders and image codecs")
    return rows


def _hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.bench_vae", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--size", type=_hw, default=(512, 512), help="HxW of the decoded image (default 512x512)")
    p.add_argument("--video-size", type=_hw, default=(720, 1280), help="HxW of video frames (default 720x1280)")
    p.add_argument("--latent-frames", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-repeats", type=int, default=None, help="timed runs of the teacher (default: --repeats)")
    p.add_argument("--no-teacher", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rows = bench_decode(a.models, teacher=not a.no_teacher, size=a.size, video_size=a.video_size,
                        latent_frames=a.latent_frames, warmup=a.warmup, repeats=a.repeats, teacher_repeats=a.teacher_repeats)
    print(json.dumps(rows, indent=2) if a.json else "\n".join(json.dumps(r) for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
