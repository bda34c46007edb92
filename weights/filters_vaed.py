"""Filters for the decoder-only VAE families' published weights: Turbo-VAED (hustvl/Turbo-VAED)
and the RAE decoders (bytetriper/RAE, hub ``nyu-visionx/RAE-collections``), plus the conversion of
the Hugging Face DINOv2-with-registers encoder (the RAE authors' encoder) to timm's layout."""

from __future__ import annotations

import re

import torch

from .filters import StateDict

__all__ = ["filter_turbo_vaed", "filter_rae", "rae_decoder_to_zoo", "hf_dinov2_to_timm"]


# --------------------------------------------------------------------------------------------
# Turbo-VAED
# --------------------------------------------------------------------------------------------

_TURBO_DROP = re.compile(r"^(latents_mean|latents_std|aligned_feature_projection_heads\..*)$")


def filter_turbo_vaed(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """The authors' Turbo-VAED files -> ours.

    The published ``Turbo-VAED-*.pth`` is the ``TurboVAEDDecoder3d`` state dict, whose names are
    ours: it passes unchanged. A whole ``AutoencoderKLTurboVAED`` state dict (``decoder.`` prefix,
    ``latents_mean`` / ``latents_std`` buffers, the distillation-only
    ``aligned_feature_projection_heads``) keeps its decoder.
    """
    if any(k.startswith("decoder.") for k in state_dict):
        out = {}
        for k, v in state_dict.items():
            if k.startswith("decoder."):
                out[k.removeprefix("decoder.")] = v
            elif not _TURBO_DROP.match(k):
                raise KeyError(f"unexpected key {k!r} beside the decoder of an AutoencoderKLTurboVAED file")
        return out
    return {k: v for k, v in state_dict.items() if not _TURBO_DROP.match(k)}


# --------------------------------------------------------------------------------------------
# RAE
# --------------------------------------------------------------------------------------------

# the authors' ViTMAELayer names -> timm Block names (q, k, v are fused into qkv below)
_RAE_LAYER = [
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
]
_RAE_QKV = re.compile(r"^decoder_layers\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")


def rae_decoder_to_zoo(state_dict: StateDict) -> StateDict:
    """The authors' ``GeneralDecoder`` state dict (``model.pt``) -> our ``decoder.`` keys."""
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in state_dict.items():
        m = _RAE_QKV.match(k)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
            continue
        if k.startswith("decoder_layers."):
            _, idx, rest = k.split(".", 2)
            for old, new in _RAE_LAYER:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            else:
                raise KeyError(f"unknown RAE decoder layer key {k!r}")
            k = f"decoder_layers.{idx}.{rest}"
        elif k not in ("decoder_embed.weight", "decoder_embed.bias", "decoder_pos_embed", "trainable_cls_token",
                       "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"):
            raise KeyError(f"unknown RAE decoder key {k!r}")
        out[f"decoder.{k}"] = v
    for (idx, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise KeyError(f"decoder layer {idx}: query/key/value {kind} incomplete ({sorted(parts)})")
        out[f"decoder.decoder_layers.{idx}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def hf_dinov2_to_timm(state_dict: StateDict, grid_size: tuple[int, int]) -> StateDict:
    """``Dinov2WithRegistersModel`` (Hugging Face, e.g. ``facebook/dinov2-with-registers-base``) ->
    timm's ``vit_*_reg4_dinov2`` at ``grid_size`` patches.

    timm keeps no position embedding for the prefix tokens (``no_embed_class``): the class token's
    position embedding is folded into it, and the patch position embeddings are resampled once to
    ``grid_size`` the way the Hugging Face model does it on every call (bicubic, antialiased, in
    float32). The final LayerNorm's affine is not kept (the RAE encoder drops it). ``mask_token``
    is unused.
    """
    from timm.layers import resample_abs_pos_embed

    sd = {k.removeprefix("embeddings."): v for k, v in state_dict.items()}
    out: StateDict = {}
    pos = sd.pop("position_embeddings")
    out["cls_token"] = sd.pop("cls_token") + pos[:, :1]
    out["reg_token"] = sd.pop("register_tokens")
    out["pos_embed"] = resample_abs_pos_embed(pos[:, 1:], list(grid_size), num_prefix_tokens=0)
    out["patch_embed.proj.weight"] = sd.pop("patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = sd.pop("patch_embeddings.projection.bias")
    sd.pop("mask_token", None)
    sd.pop("layernorm.weight", None)
    sd.pop("layernorm.bias", None)
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    names = [("norm1.", "norm1."), ("norm2.", "norm2."), ("attention.output.dense.", "attn.proj."),
             ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."), ("layer_scale1.lambda1", "ls1.gamma"),
             ("layer_scale2.lambda1", "ls2.gamma")]
    for i in layers:
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k_, v = (sd.pop(f"{p}attention.attention.{n}.{kind}") for n in ("query", "key", "value"))
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([q, k_, v], 0)
        for key in [k for k in sd if k.startswith(p)]:
            rest = key[len(p):]
            for old, new in names:
                if rest.startswith(old):
                    out[f"blocks.{i}.{new}{rest[len(old):]}"] = sd.pop(key)
                    break
            else:
                raise KeyError(f"unknown DINOv2 key {key!r}")
    if sd:
        raise KeyError(f"unknown DINOv2 keys {sorted(sd)[:3]}")
    return out


def filter_rae(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """An RAE weight file -> ours.

    - our own files (``encoder.`` + ``decoder.`` keys) pass unchanged;
    - the authors' decoder file (``decoders/<encoder>/<variant>/model.pt``: ``decoder_embed``,
      ``decoder_layers.N.attention.attention.query`` ...) is renamed to our layout (timm blocks, q/k/v
      fused) and completed with the model's frozen encoder: the file holds no encoder, which the
      authors take from ``facebook/dinov2-with-registers-base``. If the model was built without
      encoder weights, they are fetched first with :meth:`RAE.load_encoder_pretrained` (timm's copy
      of the same DINOv2 weights, from the Hugging Face hub or its cache).
    """
    if any(k.startswith("encoder.") for k in state_dict):
        return state_dict
    if "decoder_embed.weight" not in state_dict:
        raise KeyError("neither an RAE decoder file (no decoder_embed.weight) nor a zoo RAE file (no encoder.* keys)")
    out = rae_decoder_to_zoo(state_dict)
    if not getattr(model, "encoder_loaded", False):
        model.load_encoder_pretrained()  # type: ignore[operator]
    out.update({f"encoder.{k}": v for k, v in model.encoder.state_dict().items()})  # type: ignore[union-attr]
    return out
