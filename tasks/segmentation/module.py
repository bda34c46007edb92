"""Decoupled distillation of a SAM image encoder (MobileSAM's recipe).

MobileSAM ("Faster Segment Anything: Towards Lightweight SAM for Mobile Applications", Zhang et
al., arXiv 2306.14289; ChaoningZhang/MobileSAM, Apache-2.0) trains its small image encoder alone:
the student encoder regresses the teacher's (SAM ViT-H's) image embeddings with an MSE loss, and
the prompt encoder and mask decoder are SAM's own, copied from the teacher and frozen, so the
student's embeddings feed the teacher's decoder unchanged ("decoupled distillation": no mask
loss, no decoder in the loop).

:class:`SamDistillModule` does that for any pair of zoo segmentation models (student: default
``mobile_sam_vit_t``; teacher: default ``sam_vit_h`` with ``teacher_checkpoint`` /
``teacher_pretrained`` weights). Images come from :class:`~zoo.tasks.segmentation.data.SegmentationDataModule`
(resized on the long side and padded as SAM does; both encoders see SAM's ``preprocess`` of the
same pixels).

The teacher is run once per image: its embeddings are cached on disk
(:class:`TeacherEmbeddingCache`, safetensors files written atomically) under
``cache_dir / "<teacher>-<weights digest>-<img_size>-<dtype>"``, one file per image key (the
image file's resolved path, byte size, modification time and the resize). With ``precompute``
(default) every training and validation image missing from the cache is embedded at the start of
``fit`` (each DDP rank a share, then a barrier), and the teacher is moved off the accelerator;
training steps then only read the cache. Images still missing (``precompute: false``) are embedded
in the step that first meets them. Later epochs and later runs with the same teacher weights read
the same files. The teacher is never part of the module's state dict or checkpoint.

Only the student's image encoder trains (AdamW; cosine or constant learning rate after an
optional linear warm-up). Validation logs the embedding MSE (``val/mse``).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

import zoo
from zoo.hub import cache_dir as zoo_cache_dir
from zoo.registry import get_entry, split_name

from ..base import TaskConfigError, ZooModule

__all__ = ["SamDistillModule", "TeacherEmbeddingCache", "sam_input", "weights_digest"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def _dtype(name: str, what: str) -> torch.dtype:
    if name not in _DTYPES:
        raise TaskConfigError(f"{what} must be one of {', '.join(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def sam_input(net: nn.Module, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """SAM's ``preprocess`` for a batch: ``images`` (B, 3, S, S) uint8 (or 0-255 floats) holding
    resized images of ``sizes`` (B, 2) = (h, w) in their top-left corners -> normalised with the
    model's ``pixel_mean`` / ``pixel_std`` and zero outside (h, w), the padding SAM adds after
    normalising. ``S`` must be the model's ``img_size``."""
    s = int(net.img_size)
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
        raise TaskConfigError(
            f"expected a batch of (3, {s}, {s}) images for a model with img_size={s}, got {tuple(images.shape)}"
            " (set data.img_size to the student's img_size)"
        )
    mean = net.pixel_mean.reshape(1, -1, 1, 1).float()
    std = net.pixel_std.reshape(1, -1, 1, 1).float()
    x = (images.float() - mean) / std
    r = torch.arange(s, device=images.device)
    sizes = sizes.to(images.device)
    valid = (r.view(1, s, 1) < sizes[:, 0].view(-1, 1, 1)) & (r.view(1, 1, s) < sizes[:, 1].view(-1, 1, 1))
    return x * valid[:, None].to(x.dtype)


def weights_digest(net: nn.Module) -> str:
    """A 32-hex-digit BLAKE2b digest of a model's state dict (names, dtypes, shapes, bytes) and of
    its ``pixel_mean`` / ``pixel_std``: what identifies a teacher's weights in the cache."""
    h = hashlib.blake2b(digest_size=16)
    items = sorted(net.state_dict().items())
    for name in ("pixel_mean", "pixel_std"):
        if isinstance(getattr(net, name, None), torch.Tensor):
            items.append((f"@{name}", getattr(net, name)))
    for k, v in items:
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


class TeacherEmbeddingCache:
    """Teacher embeddings on disk, one safetensors file per image key.

    ``root / sha1(key)[:2] / sha1(key).safetensors`` holds the tensor ``embedding`` (stored as
    ``dtype``) and the key in its metadata (checked on read). Writes go to a temporary file in the
    same folder, then are renamed: a reader never sees a partial file. An unreadable file counts
    as missing (and is rewritten).
    """

    def __init__(self, root: str | os.PathLike, dtype: torch.dtype = torch.float16):
        self.root = Path(root)
        self.dtype = dtype

    def path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return self.root / h[:2] / f"{h}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors import SafetensorError, safe_open

        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    return None
                return f.get_tensor("embedding")
        except (OSError, SafetensorError, KeyError, ValueError):
            return None

    def put(self, key: str, embedding: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({"embedding": embedding.detach().to("cpu", self.dtype).contiguous()}, tmp, metadata={"key": key})
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return p


class SamDistillModule(ZooModule):
    """MobileSAM's decoupled distillation (see the module docstring).

    Args:
        model / model_args / pretrained / checkpoint_path: the student (see ``ZooModule``).
        teacher: registry name of the teacher (``sam_vit_h``, ``sam_vit_b`` ...).
        teacher_args: constructor arguments of the teacher (e.g. a small test size).
        teacher_checkpoint: the teacher's weights file (e.g. ``sam_vit_h_4b8939.pth``).
        teacher_pretrained: the teacher's registry weights instead (downloaded when missing).
        teacher_dtype: float32, bfloat16 or float16 for running the teacher.
        cache_dir: where teacher embeddings are kept (default: ``$ZOO_CACHE/sam_teacher_embeddings``,
            i.e. ``~/.cache/zoo/...``).
        cache_dtype: float16 (half the disk), bfloat16 or float32 for the cached embeddings.
        precompute: embed every uncached training / validation image at the start of ``fit``.
        teacher_batch_size: images per teacher forward when precomputing.
        copy_decoder: start the student's prompt encoder and mask decoder from the teacher's.
        lr / betas / weight_decay: AdamW on the image encoder.
        scheduler: ``cosine`` (to ``min_lr_ratio * lr`` over the run's steps) or ``constant``,
            both after ``warmup_steps`` of linear warm-up.
    """

    def __init__(
        self,
        model: str = "mobile_sam_vit_t",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        teacher: str = "sam_vit_h",
        teacher_args: dict[str, Any] | None = None,
        teacher_checkpoint: str | None = None,
        teacher_pretrained: bool = False,
        teacher_dtype: str = "float32",
        cache_dir: str | None = None,
        cache_dtype: str = "float16",
        precompute: bool = True,
        teacher_batch_size: int = 4,
        copy_decoder: bool = True,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 5e-4,
        scheduler: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ):
        super().__init__(model, model_args, pretrained, checkpoint_path)
        missing = [p for p in (*_SAM_PARTS, "img_size", "pixel_mean", "pixel_std") if not hasattr(self.net, p)]
        if missing:
            raise TaskConfigError(f"student {model} is not a SAM-family model (it has no {', '.join(missing)})")
        if scheduler not in ("cosine", "constant"):
            raise TaskConfigError(f"scheduler must be 'cosine' or 'constant', got {scheduler!r}")
        if teacher_checkpoint is not None and not Path(teacher_checkpoint).is_file():
            raise FileNotFoundError(f"teacher checkpoint {teacher_checkpoint} does not exist")
        if get_entry(teacher).task != "segmentation":  # unknown names raise UnknownModelError here
            raise TaskConfigError(f"teacher {teacher} is a {get_entry(teacher).task} model, not a segmentation one")
        _dtype(teacher_dtype, "teacher_dtype")
        _dtype(cache_dtype, "cache_dtype")
        # decoupled distillation: SAM's prompt encoder and mask decoder stay as they are
        self.net.prompt_encoder.requires_grad_(False)
        self.net.mask_decoder.requires_grad_(False)
        # the teacher and the cache live outside nn.Module's registration: out of the state dict
        object.__setattr__(self, "_teacher", None)
        object.__setattr__(self, "_digest", None)
        object.__setattr__(self, "_cache", None)
        self.teacher_images = 0  # images the teacher has embedded in this process

    # ----------------------------------------------------------------------------- teacher

    @property
    def teacher_net(self) -> nn.Module:
        """The frozen teacher, built on first use."""
        if self._teacher is None:
            hp = self.hparams
            t = zoo.create(hp.teacher, pretrained=hp.teacher_pretrained, checkpoint_path=hp.teacher_checkpoint,
                           **(hp.teacher_args or {}))
            missing = [p for p in (*_SAM_PARTS, "img_size", "pixel_mean", "pixel_std") if not hasattr(t, p)]
            if missing:
                raise TaskConfigError(f"teacher {hp.teacher} is not a SAM-family model (it has no {', '.join(missing)})")
            if int(t.img_size) != int(self.net.img_size):
                raise TaskConfigError(
                    f"teacher {hp.teacher} takes img_size={t.img_size} but student {hp.model} img_size={self.net.img_size}:"
                    " both encoders must see the same input (set teacher_args / model_args img_size)"
                )
            t.eval().requires_grad_(False)
            object.__setattr__(self, "_digest", weights_digest(t))
            t.to(_DTYPES[hp.teacher_dtype])
            object.__setattr__(self, "_teacher", t)
        return self._teacher

    @property
    def cache(self) -> TeacherEmbeddingCache:
        """The embedding cache of this teacher's weights (builds the teacher to identify them)."""
        if self._cache is None:
            hp = self.hparams
            self.teacher_net  # noqa: B018 - computes the weights digest
            root = Path(hp.cache_dir) if hp.cache_dir else zoo_cache_dir() / "sam_teacher_embeddings"
            name = f"{split_name(hp.teacher)[0]}-{self._digest}-{int(self.net.img_size)}-{hp.cache_dtype}"
            object.__setattr__(self, "_cache", TeacherEmbeddingCache(root / name, _DTYPES[hp.cache_dtype]))
        return self._cache

    def run_teacher(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """The teacher's embeddings (float32, on the module's device) of a batch (uncached)."""
        t = self.teacher_net
        dtype = _DTYPES[self.hparams.teacher_dtype]
        if t.pixel_mean.device != self.device:
            t.to(self.device)
        images, sizes = images.to(self.device), sizes.to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            emb = t.image_encoder(sam_input(t, images, sizes).to(dtype))
        self.teacher_images += images.shape[0]
        return emb.float()

    def teacher_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        """Targets for a batch: cached embeddings, the missing ones computed and cached now.
        Always the cached values (rounded to ``cache_dtype``), whether read or just written."""
        cache = self.cache
        keys = list(batch["key"])
        found = [cache.get(k) for k in keys]
        miss = [i for i, e in enumerate(found) if e is None]
        if miss:
            emb = self.run_teacher(batch["image"][miss], batch["size"][miss])
            for j, i in enumerate(miss):
                cache.put(keys[i], emb[j])
                found[i] = emb[j].to(cache.dtype)
        return torch.stack([e.to(self.device) for e in found]).float()

    @torch.no_grad()
    def precompute_embeddings(self, dataset, num_workers: int = 0) -> int:
        """Embed every image of ``dataset`` (a :class:`SamImageDataset`) missing from the cache;
        under DDP each rank takes every world-size-th one. Returns how many this rank embedded."""
        from zoo.progress import track

        cache = self.cache
        todo = [i for i, k in enumerate(dataset.keys()) if k not in cache]
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        mine = todo[rank::world]
        if mine:
            loader = DataLoader(Subset(dataset, mine), batch_size=max(1, self.hparams.teacher_batch_size),
                                num_workers=num_workers, shuffle=False)
            for batch in track(loader, "teacher embeddings", total=len(loader)):
                emb = self.run_teacher(batch["image"], batch["size"])
                for k, e in zip(batch["key"], emb):
                    cache.put(k, e)
        if trainer is not None and world > 1:
            trainer.strategy.barrier("sam_teacher_embeddings")
        return len(mine)

    def copy_teacher_decoder(self) -> None:
        """Load the teacher's prompt encoder and mask decoder (buffers included) into the student."""
        t = self.teacher_net
        for part in ("prompt_encoder", "mask_decoder"):
            src, dst = getattr(t, part).state_dict(), getattr(self.net, part).state_dict()
            bad = [k for k in dst if k not in src or src[k].shape != dst[k].shape] + [k for k in src if k not in dst]
            if bad:
                raise TaskConfigError(
                    f"the {part} of teacher {self.hparams.teacher} does not fit student {self.hparams.model} "
                    f"(e.g. {bad[0]}): set copy_decoder: false"
                )
            getattr(self.net, part).load_state_dict({k: v.to(dst[k].dtype) for k, v in src.items()})

    # ---------------------------------------------------------------------------- training

    def student_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.net.image_encoder(sam_input(self.net, batch["image"], batch["size"]))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE between the student's and the (cached) teacher's image embeddings."""
        target = self.teacher_embeddings(batch)
        pred = self.student_embeddings(batch)
        if pred.shape != target.shape:
            raise TaskConfigError(
                f"student {self.hparams.model} makes embeddings {tuple(pred.shape[1:])}, "
                f"teacher {self.hparams.teacher} {tuple(target.shape[1:])}"
            )
        return F.mse_loss(pred.float(), target)

    def on_fit_start(self) -> None:
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None)
        size = getattr(getattr(dm, "hparams", None), "img_size", None)
        if size is not None and int(size) != int(self.net.img_size):
            raise TaskConfigError(f"data.img_size={size} but student {hp.model} has img_size={self.net.img_size}")
        if hp.copy_decoder:
            self.copy_teacher_decoder()
        if hp.precompute and dm is not None:
            workers = int(getattr(dm, "num_workers", 0) or 0)
            for ds in (getattr(dm, "train_set", None), getattr(dm, "val_set", None)):
                if ds is not None and hasattr(ds, "keys"):
                    self.precompute_embeddings(ds, workers)
            if self._teacher is not None and self.device.type != "cpu":
                self._teacher.to("cpu")  # free the accelerator for the student
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/mse", loss.detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("val/mse", self.loss(batch), prog_bar=True, batch_size=batch["image"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.scheduler == "constant" and not hp.warmup_steps:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm, floor, cosine = hp.warmup_steps, hp.min_lr_ratio, hp.scheduler == "cosine"

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if not cosine:
                return 1.0
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # `zoo eval` puts this into the network's pretrained_cfg: what the encoder was distilled from
        hp = self.hparams
        checkpoint["zoo_data_cfg"] = {
            "sam_teacher": {"name": hp.teacher, "weights": hp.teacher_checkpoint or ("pretrained" if hp.teacher_pretrained else None),
                            "digest": self._digest, "img_size": int(self.net.img_size)}
        }
