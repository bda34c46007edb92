"""A RAW simulator: Brooks et al.'s "unprocessing" of sRGB images into packed Bayer RAW, in torch.

"Unprocessing Images for Learned Raw Denoising" (Brooks, Mildenhall, Xue, Chen, Sharlet, Barron,
CVPR 2019; reference code google-research/google-research ``unprocessing``, Apache-2.0). Each
step inverts one stage of a simple camera pipeline, with random camera metadata per image:

1. inverse tone curve: the inverse of the smoothstep ``3x^2 - 2x^3``;
2. inverse gamma: ``max(x, 1e-8) ** 2.2``;
3. inverse colour correction: ``rgb2cam`` = a random convex mix of four XYZ->camera matrices
   (the paper's cameras) times sRGB->XYZ, rows normalised to 1;
4. inverse white balance and brightening, with gains ``[1/red, 1, 1/blue] / rgb_gain``
   (``rgb_gain = 1 / N(0.8, 0.1)``, ``red ~ U(1.9, 2.4)``, ``blue ~ U(1.5, 1.9)``) made "safe"
   near white (the highlight-preserving mask of the paper, so bright pixels are not dimmed),
   then a clip to [0, 1];
5. mosaic to RGGB, packed as 4 channels ``(R, G_r, G_b, B)`` at half resolution;
6. shot and read noise, ``N(0, sqrt(x * shot + read))`` with ``log(shot) ~ U(log 1e-4,
   log 0.012)`` and ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)`` (the paper's fit to
   real sensors), then a clip to [0, 1] (the zoo's RAW contract).

:func:`process` runs the pipeline forwards from the known metadata on the full-resolution
(pre-mosaic) camera image, so ``process(unprocess(x))`` returns ``x`` (demosaicking plays no
part). Unlike the paper's ``process``, it applies ``rgb_gain`` and inverts the *safe* gains
exactly (a scalar root-find per pixel on the grey level), and clips only the final linear RGB.
The round trip is therefore exact (to float rounding, ~1e-6) wherever the simulator did not
clip: a camera value pushed below 0 by the colour matrix (very saturated colours) or above 1 by
the gains is lost, as on a real sensor. :func:`process_packed` is the demosaic-free version for
packed RAW (half resolution, the two greens averaged).

Every random draw takes an optional ``torch.Generator``: the same generator state gives the same
metadata and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = [
    "XYZ2CAMS",
    "RGB2XYZ",
    "RawMetadata",
    "random_ccm",
    "random_gains",
    "random_noise_levels",
    "random_metadata",
    "smoothstep",
    "inverse_smoothstep",
    "gamma_expansion",
    "gamma_compression",
    "apply_ccm",
    "safe_invert_gains",
    "apply_gains",
    "mosaic",
    "pack_bayer",
    "unpack_bayer",
    "add_noise",
    "unprocess",
    "simulate_raw",
    "process",
    "process_packed",
    "naive_render",
]

# XYZ -> camera matrices of the four cameras in Brooks et al. (2019).
XYZ2CAMS = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
# Linear sRGB (D65) -> XYZ.
RGB2XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)

_HIGHLIGHT_INFLECTION = 0.9


@dataclass
class RawMetadata:
    """The camera metadata of one simulated image (or a batch: leading dimensions on every field).

    ``rgb2cam`` / ``cam2rgb``: ``(..., 3, 3)``; gains and noise levels: ``(...)``.
    """

    rgb2cam: torch.Tensor
    cam2rgb: torch.Tensor
    rgb_gain: torch.Tensor
    red_gain: torch.Tensor
    blue_gain: torch.Tensor
    shot_noise: torch.Tensor
    read_noise: torch.Tensor

    def to(self, *args, **kwargs) -> RawMetadata:
        return RawMetadata(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def stack(items: list[RawMetadata]) -> RawMetadata:
        return RawMetadata(**{f.name: torch.stack([getattr(m, f.name) for m in items]) for f in fields(RawMetadata)})


# ------------------------------------------------------------------------------- random metadata


def _uniform(lo: float, hi: float, generator: torch.Generator | None, dtype=torch.float64) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((), generator=generator, dtype=dtype)


def _normal(mean: float, std: float, generator: torch.Generator | None, dtype=torch.float64) -> torch.Tensor:
    return mean + std * torch.randn((), generator=generator, dtype=dtype)


def random_ccm(generator: torch.Generator | None = None) -> torch.Tensor:
    """A random sRGB -> camera matrix (float64, rows sum to 1): a random convex combination of
    the four XYZ -> camera matrices, times sRGB -> XYZ."""
    xyz2cams = torch.tensor(XYZ2CAMS, dtype=torch.float64)
    weights = 1e-8 + (1e8 - 1e-8) * torch.rand((len(XYZ2CAMS), 1, 1), generator=generator, dtype=torch.float64)
    xyz2cam = (xyz2cams * weights).sum(0) / weights.sum(0)
    rgb2cam = xyz2cam @ torch.tensor(RGB2XYZ, dtype=torch.float64)
    return rgb2cam / rgb2cam.sum(dim=-1, keepdim=True)


def random_gains(generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rgb_gain, red_gain, blue_gain)``: brightening ``1 / N(0.8, 0.1)`` (the normal draw is
    kept >= 0.1 so the gain stays finite) and white balance ``U(1.9, 2.4)``, ``U(1.5, 1.9)``."""
    rgb_gain = 1.0 / _normal(0.8, 0.1, generator).clamp_min(0.1)
    red_gain = _uniform(1.9, 2.4, generator)
    blue_gain = _uniform(1.5, 1.9, generator)
    return rgb_gain, red_gain, blue_gain


def random_noise_levels(generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shot, read)`` noise levels from the paper's log-linear fit to real sensors."""
    log_shot = _uniform(torch.log(torch.tensor(1e-4)).item(), torch.log(torch.tensor(0.012)).item(), generator)
    log_read = 2.18 * log_shot + 1.20 + _normal(0.0, 0.26, generator)
    return log_shot.exp(), log_read.exp()


def random_metadata(generator: torch.Generator | None = None) -> RawMetadata:
    """All random camera metadata for one image (float64 scalars / 3x3 matrices)."""
    rgb2cam = random_ccm(generator)
    rgb_gain, red_gain, blue_gain = random_gains(generator)
    shot, read = random_noise_levels(generator)
    return RawMetadata(
        rgb2cam=rgb2cam,
        cam2rgb=torch.linalg.inv(rgb2cam),
        rgb_gain=rgb_gain,
        red_gain=red_gain,
        blue_gain=blue_gain,
        shot_noise=shot,
        read_noise=read,
    )


# ------------------------------------------------------------------------------------- the steps


def _bc(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image scalar (shape ``(...)``) broadcast against an image ``(..., C, H, W)``."""
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    return t.reshape(*t.shape, 1, 1, 1)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The global tone curve ``3x^2 - 2x^3``."""
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`smoothstep` on [0, 1] (input clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)


def gamma_expansion(x: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """sRGB-ish gamma to linear, ``max(x, 1e-8) ** gamma``."""
    return x.clamp_min(1e-8) ** gamma


def gamma_compression(x: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """Linear to gamma, ``max(x, 1e-8) ** (1 / gamma)``."""
    return x.clamp_min(1e-8) ** (1.0 / gamma)


def apply_ccm(image: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """``out_c = sum_k ccm[c, k] * image_k`` for ``image (..., 3, H, W)``, ``ccm (..., 3, 3)``."""
    ccm = torch.as_tensor(ccm, device=image.device, dtype=image.dtype)
    flat = image.flatten(-2)  # (..., 3, HW)
    return (ccm @ flat).reshape(image.shape)


def _wb_gains(meta: RawMetadata, like: torch.Tensor) -> torch.Tensor:
    """``[1/red, 1, 1/blue] / rgb_gain`` as ``(..., 3, 1, 1)``."""
    red, blue, rgb = (torch.as_tensor(t, device=like.device, dtype=like.dtype) for t in (meta.red_gain, meta.blue_gain, meta.rgb_gain))
    gains = torch.stack([1.0 / red, torch.ones_like(red), 1.0 / blue], dim=-1) / rgb[..., None]
    return gains[..., None, None]


def _safe_gains(gray: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    mask = ((gray - _HIGHLIGHT_INFLECTION).clamp_min(0.0) / (1.0 - _HIGHLIGHT_INFLECTION)) ** 2
    return torch.maximum(mask + (1.0 - mask) * gains, gains)


def safe_invert_gains(image: torch.Tensor, meta: RawMetadata) -> torch.Tensor:
    """Inverse white balance and brightening; gains fade to 1 as the grey level goes from 0.9 to 1,
    so saturated highlights keep their brightness (Brooks et al.'s ``safe_invert_gains``)."""
    gains = _wb_gains(meta, image)
    gray = image.mean(dim=-3, keepdim=True)
    return image * _safe_gains(gray, gains)


def apply_gains(image: torch.Tensor, meta: RawMetadata, iterations: int = 60) -> torch.Tensor:
    """The exact inverse of :func:`safe_invert_gains` (where the result was not clipped).

    Below the inflection the gains are plain (``x = y / g``); above it the original grey level
    ``t`` solves ``t = mean_c(y_c / s_c(t))``, whose right side falls as ``t`` grows, so the root is
    unique and bisection on ``[0.9, mean(y / g)]`` finds it.
    """
    gains = _wb_gains(meta, image)
    plain = image / gains
    t_hi = plain.mean(dim=-3, keepdim=True)
    bright = t_hi > _HIGHLIGHT_INFLECTION
    if not bool(bright.any()):
        return plain
    lo = torch.full_like(t_hi, _HIGHLIGHT_INFLECTION)
    hi = torch.maximum(t_hi, lo)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        f = (image / _safe_gains(mid, gains)).mean(dim=-3, keepdim=True)
        above = f > mid  # the root lies above mid
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    t = 0.5 * (lo + hi)
    return torch.where(bright, image / _safe_gains(t, gains), plain)


def mosaic(image: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` -> packed RGGB ``(..., 4, H/2, W/2)``: ``(R, G_r, G_b, B)``."""
    h, w = image.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic needs an even height and width, got {h}x{w}")
    return torch.stack(
        [image[..., 0, 0::2, 0::2], image[..., 1, 0::2, 1::2], image[..., 1, 1::2, 0::2], image[..., 2, 1::2, 1::2]], dim=-3
    )


def pack_bayer(bayer: torch.Tensor) -> torch.Tensor:
    """A Bayer mosaic ``(..., H, W)`` with R at (0, 0) -> packed RGGB ``(..., 4, H/2, W/2)``."""
    h, w = bayer.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"a Bayer mosaic needs an even height and width, got {h}x{w}")
    return torch.stack([bayer[..., 0::2, 0::2], bayer[..., 0::2, 1::2], bayer[..., 1::2, 0::2], bayer[..., 1::2, 1::2]], dim=-3)


def unpack_bayer(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_bayer`: ``(..., 4, h, w)`` -> ``(..., 2h, 2w)``."""
    # (R, Gr, Gb, B) = pixel (dy, dx) = (0,0), (0,1), (1,0), (1,1): exactly pixel_shuffle's order.
    return F.pixel_shuffle(packed.reshape(-1, 4, *packed.shape[-2:]), 2).reshape(*packed.shape[:-3], 2 * packed.shape[-2], 2 * packed.shape[-1])


def add_noise(raw: torch.Tensor, shot_noise, read_noise, generator: torch.Generator | None = None) -> torch.Tensor:
    """Heteroscedastic Gaussian noise, variance ``raw * shot + read``."""
    var = raw.clamp_min(0.0) * _bc(shot_noise, raw) + _bc(read_noise, raw)
    noise = torch.randn(raw.shape, generator=generator, dtype=raw.dtype, device=raw.device if generator is None else generator.device)
    return raw + noise.to(raw.device) * var.sqrt()


# ------------------------------------------------------------------------------------- pipelines


def _check_rgb(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim < 3 or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an RGB image (..., 3, H, W), got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"expected a floating-point image in [0, 1], got dtype {image.dtype}")


def unprocess(
    image: torch.Tensor, metadata: RawMetadata | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, RawMetadata]:
    """sRGB ``(3, H, W)`` in [0, 1] -> linear camera RGB ``(3, H, W)`` in [0, 1] (before the
    mosaic), and the metadata used (drawn from ``generator`` unless given)."""
    _check_rgb(image)
    meta = metadata if metadata is not None else random_metadata(generator)
    x = inverse_smoothstep(image)
    x = gamma_expansion(x)
    x = apply_ccm(x, meta.rgb2cam)
    x = safe_invert_gains(x, meta)
    return x.clamp(0.0, 1.0), meta


def simulate_raw(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    noise: bool = True,
    metadata: RawMetadata | None = None,
) -> tuple[torch.Tensor, RawMetadata]:
    """sRGB ``(3, H, W)`` -> packed RGGB RAW ``(4, H/2, W/2)`` in [0, 1]: :func:`unprocess`, the
    mosaic and (``noise``) shot / read noise, clipped to [0, 1]."""
    linear, meta = unprocess(image, metadata, generator)
    raw = mosaic(linear)
    if noise:
        raw = add_noise(raw, meta.shot_noise, meta.read_noise, generator).clamp(0.0, 1.0)
    return raw, meta


def process(linear: torch.Tensor, metadata: RawMetadata) -> torch.Tensor:
    """Linear camera RGB ``(..., 3, H, W)`` -> sRGB in [0, 1] from the known metadata: exact white
    balance and brightening (:func:`apply_gains`), ``cam2rgb``, clip, gamma, smoothstep."""
    _check_rgb(linear)
    x = apply_gains(linear, metadata)
    x = apply_ccm(x, metadata.cam2rgb).clamp(0.0, 1.0)
    return smoothstep(gamma_compression(x))


def process_packed(raw: torch.Tensor, metadata: RawMetadata) -> torch.Tensor:
    """Demosaic-free rendering of packed RGGB ``(..., 4, h, w)``: ``(R, (G_r + G_b) / 2, B)`` at
    half resolution, then :func:`process`."""
    rgb = torch.stack([raw[..., 0, :, :], 0.5 * (raw[..., 1, :, :] + raw[..., 2, :, :]), raw[..., 3, :, :]], dim=-3)
    return process(rgb, metadata)


def naive_render(raw: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """A metadata-free rendering of packed RGGB ``(..., 4, h, w)`` to sRGB ``(..., 3, 2h, 2w)``:
    half-resolution ``(R, mean G, B)``, grey-world white balance, min-max normalisation,
    ``1 / gamma`` power and bilinear upsampling. It is the "content" image of the unpaired recipe
    (a classical rendering of the same RAW; its luminance structure is what matters)."""
    lead = raw.shape[:-3]
    r = raw.reshape(-1, *raw.shape[-3:]).float()
    rgb = torch.stack([r[:, 0], 0.5 * (r[:, 1] + r[:, 2]), r[:, 3]], dim=1)
    means = rgb.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    rgb = rgb * (means[:, 1:2] / means)
    lo = rgb.amin(dim=(-3, -2, -1), keepdim=True)
    hi = rgb.amax(dim=(-3, -2, -1), keepdim=True)
    rgb = ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
    rgb = gamma_compression(rgb, gamma)
    out = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return out.reshape(*lead, 3, out.shape[-2], out.shape[-1]).to(raw.dtype)
