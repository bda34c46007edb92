"""CompressAI's learned image codecs, registered as the baselines the codec papers compare with.

The networks are CompressAI's own classes (InterDigitalInc/CompressAI, BSD-3-Clause-Clear), not
rewritten: each zoo model is a subclass that adds the zoo's contract through
:class:`ImageCodecMixin`:

- ``forward(x)`` takes RGB in [0, 1] of any size (padded to the codec's stride by replication,
  cropped back) and returns the reconstruction; ``rate_distortion(x, lmbda)`` returns CompressAI's
  training quantities (bits per pixel from the likelihoods, MSE, ``lmbda * 255^2 * mse + bpp``,
  the entropy bottleneck's auxiliary loss).
- ``compress_bytes(x) -> bytes`` / ``decompress_bytes(data) -> x``: CompressAI's entropy models
  and range coder, framed in the zoo's ``.zic`` container (:mod:`zoo.container`).

``quality`` (1-8; 1-6 for Cheng 2020) picks CompressAI's (N, M) for that rate point; the weight
tags ``mse_q1`` ... are the files CompressAI publishes for each quality, and they load through
:func:`~zoo.weights.filters_codec.filter_compressai` (old key names, entropy-coder tables).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.nn.functional as F

from zoo.container import IMAGE_MAGIC, ContainerError, pack, unpack
from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters_codec import filter_compressai

__all__ = ["ImageCodecMixin", "COMPRESSAI_URL"]

COMPRESSAI_URL = "https://compressai.s3.amazonaws.com/models/v1"
_TABLES = ["_quantized_cdf", "_offset", "_cdf_length"]


class ImageCodecMixin:
    """The zoo's image-codec contract on top of a CompressAI ``CompressionModel`` subclass."""

    stride: int = 64
    zoo_arch: str = ""
    quality: int = 0

    # -- shapes ---------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        check_image(x, channels=3, name=f"{self.zoo_arch} input (RGB in [0, 1])")

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

    def _compressai(self):
        return super(ImageCodecMixin, self)  # the CompressAI class after the mixin in the MRO

    # -- the model contract ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, w = x.shape[-2:]
        return self._compressai().forward(self._pad(x))["x_hat"][..., :h, :w]

    def rate_distortion(self, x: torch.Tensor, lmbda: float = 0.01) -> dict[str, torch.Tensor]:
        """CompressAI's rate-distortion loss (bpp over the unpadded pixels) and aux loss."""
        self._check(x)
        n, _, h, w = x.shape
        out = self._compressai().forward(self._pad(x))
        x_hat = out["x_hat"][..., :h, :w]
        bits = sum(-torch.log2(lk).sum() for lk in out["likelihoods"].values())
        bpp = bits / (n * h * w)
        mse = F.mse_loss(x_hat, x)
        return {
            "x_hat": x_hat,
            "bpp": bpp,
            "mse": mse,
            "loss": lmbda * 255**2 * mse + bpp,
            "aux_loss": self.aux_loss(),
        }

    # -- weights --------------------------------------------------------------------------
    def prepare_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Resize the entropy coders' table buffers to the incoming file's (they depend on the
        trained distributions), so that the strict shape check and load can follow."""
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional
        from compressai.models.utils import update_registered_buffers

        for name, module in self.named_modules():
            if isinstance(module, EntropyBottleneck):
                update_registered_buffers(module, name, _TABLES, state_dict)
            elif isinstance(module, GaussianConditional):
                update_registered_buffers(module, name, [*_TABLES, "scale_table"], state_dict)

    def _ensure_tables(self) -> None:
        eb = getattr(self, "entropy_bottleneck", None)
        if eb is not None and eb._offset.numel() == 0:
            self.update(force=True)
        gc = getattr(self, "gaussian_conditional", None)
        if gc is not None and gc._offset.numel() == 0:
            self.update(force=True)

    # -- bitstream ------------------------------------------------------------------------
    def weights_fingerprint(self) -> str:
        """CRC32 of every parameter: a file only decodes with the weights that encoded it."""
        crc = 0
        for name, p in sorted(self.named_parameters()):
            crc = zlib.crc32(name.encode(), crc)
            crc = zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes(), crc)
        return f"{crc:08x}"

    @torch.no_grad()
    def compress_bytes(self, x: torch.Tensor) -> bytes:
        """One image (1, 3, H, W) in [0, 1] -> the ``.zic`` bytes (deterministic)."""
        self._check(x)
        if x.shape[0] != 1:
            raise ValueError(f"compress_bytes takes one image (1, 3, H, W), got batch {x.shape[0]}")
        self._ensure_tables()
        h, w = x.shape[-2:]
        out = self._compressai().compress(self._pad(x))
        header = {
            "model": self.zoo_arch,
            "quality": self.quality,
            "height": int(h),
            "width": int(w),
            "shape": [int(s) for s in out["shape"]],
            "weights": self.weights_fingerprint(),
        }
        return pack(IMAGE_MAGIC, header, [list(s) for s in out["strings"]])

    @torch.no_grad()
    def decompress_bytes(self, data: bytes) -> torch.Tensor:
        header, groups = unpack(data, IMAGE_MAGIC, "compressed image")
        if header.get("model") != self.zoo_arch or header.get("quality") != self.quality:
            raise ContainerError(
                f"compressed image was made by {header.get('model')} quality {header.get('quality')}, "
                f"not {self.zoo_arch} quality {self.quality}: decompress with that model"
            )
        if header.get("weights") != self.weights_fingerprint():
            raise ContainerError(
                f"compressed image was made with other {self.zoo_arch} weights (fingerprint {header.get('weights')}, "
                f"these are {self.weights_fingerprint()}): decompress with the same weights (--pretrained / --checkpoint)"
            )
        self._ensure_tables()
        out = self._compressai().decompress(groups, torch.Size(header["shape"]))
        return out["x_hat"][..., : header["height"], : header["width"]].clamp(0, 1)


def _codec_class(base: type, arch: str) -> type:
    return type(f"Zoo{base.__name__}", (ImageCodecMixin, base), {"zoo_arch": arch})


def _build(arch: str, compressai_arch: str, base_name: str, quality: int, **kwargs: Any):
    import compressai.models as cm
    from compressai.zoo.image import cfgs

    if quality not in cfgs[compressai_arch]:
        raise ValueError(f"{arch}: quality must be one of {sorted(cfgs[compressai_arch])}, got {quality}")
    cls = _codec_class(getattr(cm, base_name), arch)
    model = cls(*cfgs[compressai_arch][quality], **kwargs)
    model.quality = quality
    return model


def _cfgs(compressai_arch: str, qualities: range) -> list[PretrainedCfg]:
    from zoo.weights.filters_codec import COMPRESSAI_FILES

    return [
        PretrainedCfg(
            tag=f"mse_q{q}",
            url=f"{COMPRESSAI_URL}/{COMPRESSAI_FILES[compressai_arch][q]}",
            license="BSD-3-Clause-Clear",
            filter_fn=filter_compressai,
            model_args={"quality": q},
            description=f"CompressAI's MSE-optimised weights, quality {q}",
        )
        for q in qualities
    ]


_COMMON = dict(
    task="image_codec",
    license="BSD-3-Clause-Clear",
    source="https://github.com/InterDigitalInc/CompressAI",
    input_size=(3, 256, 256),
    test_size=(3, 64, 64),
)


@register_model(**_COMMON, family="bmshj2018", paper="Variational image compression with a scale hyperprior",
                arxiv="1802.01436", params=2_998_147, gmacs=5.531337, quality=3,
                pretrained_cfgs=_cfgs("bmshj2018-factorized", range(1, 9)),
                description="Factorized-prior codec (Balle et al. 2018), CompressAI's implementation")
def bmshj2018_factorized(quality: int = 3, **kwargs: Any):
    return _build("bmshj2018_factorized", "bmshj2018-factorized", "FactorizedPrior", quality, **kwargs)


@register_model(**_COMMON, family="bmshj2018", paper="Variational image compression with a scale hyperprior",
                arxiv="1802.01436", params=5_075_843, gmacs=5.70701, quality=3,
                pretrained_cfgs=_cfgs("bmshj2018-hyperprior", range(1, 9)),
                description="Scale-hyperprior codec (Balle et al. 2018), CompressAI's implementation")
def bmshj2018_hyperprior(quality: int = 3, **kwargs: Any):
    return _build("bmshj2018_hyperprior", "bmshj2018-hyperprior", "ScaleHyperprior", quality, **kwargs)


@register_model(**_COMMON, family="mbt2018", paper="Joint Autoregressive and Hierarchical Priors for Learned Image Compression",
                arxiv="1809.02736", params=7_028_003, gmacs=5.970727, quality=3,
                pretrained_cfgs=_cfgs("mbt2018-mean", range(1, 9)),
                description="Mean-scale hyperprior codec (Minnen et al. 2018), CompressAI's implementation")
def mbt2018_mean(quality: int = 3, **kwargs: Any):
    return _build("mbt2018_mean", "mbt2018-mean", "MeanScaleHyperprior", quality, **kwargs)


@register_model(**_COMMON, family="cheng2020", paper="Learned Image Compression with Discretized Gaussian Mixture Likelihoods and Attention Modules",
                arxiv="2001.01568", params=11_833_149, gmacs=27.959395, quality=3,
                pretrained_cfgs=_cfgs("cheng2020-anchor", range(1, 7)),
                description="Cheng 2020 anchor (residual blocks, context model), CompressAI's implementation")
def cheng2020_anchor(quality: int = 3, **kwargs: Any):
    return _build("cheng2020_anchor", "cheng2020-anchor", "Cheng2020Anchor", quality, **kwargs)
