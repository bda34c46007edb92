"""Promptable segmentation: SAM and MobileSAM (image encoder, prompt encoder, mask decoder).

- SAM, "Segment Anything" (Kirillov et al., ICCV 2023): facebookresearch/segment-anything
  (Apache-2.0, Copyright (c) Meta Platforms, Inc. and affiliates). The prompt encoder (random
  Fourier position encoding, point / box-corner / not-a-point embeddings, mask downscaling), the
  two-way transformer mask decoder with the IoU head and the hypernetwork MLPs, the ViT image
  encoder and the ``Sam`` container follow that code; the module names are the authors', so
  ``sam_vit_{b,l,h}_*.pth`` load (through :func:`~zoo.weights.sam_filters.filter_sam`, which
  renames the MLPs of the timm ViT blocks reused in the encoder).
- MobileSAM, "Faster Segment Anything: Towards Lightweight SAM for Mobile Applications" (Zhang
  et al., 2023): ChaoningZhang/MobileSAM (Apache-2.0). SAM's prompt encoder and decoder with a
  TinyViT-5M image encoder distilled from SAM's ViT-H; ``weights/mobile_sam.pt`` loads through
  :func:`~zoo.weights.sam_filters.filter_mobile_sam`.
- ``mobile_sam_repvit``: the swappable-encoder path, :func:`sam_with_backbone` on timm's RepViT
  with EdgeSAM's fusion neck ("EdgeSAM: Prompt-In-the-Loop Distillation for On-Device
  Deployment of SAM", chongzhou96/EdgeSAM); no published weights in this layout.

The encoders live in :mod:`zoo.models.sam_encoders`.

Conventions (the SAM contract of the zoo): ``forward(images)`` takes RGB in [0, 1], already
resized so that the long side is at most ``img_size``, scales to 0-255, normalises with SAM's
``pixel_mean`` / ``pixel_std`` and pads bottom / right with zeros to ``img_size`` (SAM's
``preprocess``), and returns the image embeddings (B, 256, img_size/16, img_size/16).
:meth:`Sam.predict_masks` runs the prompt encoder and the mask decoder on embeddings with prompts
in the padded input frame, returning low-res mask logits (B, C, img_size/4, img_size/4) and IoU
predictions (B, C).
"""

from __future__ import annotations

import copy
import importlib
import math
import warnings
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image, is_exporting
from zoo.weights.sam_filters import TINYVIT_HEAD_PREFIXES, filter_mobile_sam, filter_sam, to_authors_sam

from .sam_encoders import BackboneNeckEncoder, ImageEncoderViT, TinyViT, build_feature_backbone

__all__ = [
    "Sam",
    "PromptEncoder",
    "PositionEmbeddingRandom",
    "MaskDecoder",
    "TwoWayTransformer",
    "sam_with_backbone",
    "PIXEL_MEAN",
    "PIXEL_STD",
]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_SAM_PAPER = "Segment Anything"
_SAM_ARXIV = "2304.02643"
_SAM_SOURCE = "https://github.com/facebookresearch/segment-anything"
_MSAM_PAPER = "Faster Segment Anything: Towards Lightweight SAM for Mobile Applications"
_MSAM_ARXIV = "2306.14289"
_MSAM_SOURCE = "https://github.com/ChaoningZhang/MobileSAM"
_EDGESAM_PAPER = "EdgeSAM: Prompt-In-the-Loop Distillation for On-Device Deployment of SAM"
_EDGESAM_ARXIV = "2312.06660"
_EDGESAM_SOURCE = "https://github.com/chongzhou96/EdgeSAM"


# ----------------------------------------------------------------------------- prompt encoder


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y): ``[sin, cos](2 pi (2 p - 1) G)``."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None):
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The encoding of the pixel centres of an ``size`` grid, (C, H, W)."""
        h, w = size
        dev = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """The encoding of (B, N, 2) pixel coordinates (x, y) in an ``image_size`` (H, W) frame."""
        scale = coords_input.new_tensor([image_size[1], image_size[0]])
        return self._pe_encoding((coords_input / scale).to(torch.float))


class PromptEncoder(nn.Module):
    """SAM's prompt encoder: sparse embeddings of points and box corners, dense embeddings of
    a mask input (or the learned no-mask embedding).

    Point labels: 1 foreground, 0 background, -1 padding (the not-a-point embedding); 2 and 3
    are box corners given as points (the convention of SAM's ONNX decoder export)."""

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        activation: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # positive / negative point, two box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4, eps=1e-6),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans, eps=1e-6),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) position encoding of the image-embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels.unsqueeze(-1)
        pad_mask = labels == -1
        emb = torch.where(pad_mask, torch.zeros_like(emb), emb) + pad_mask * self.not_a_point_embed.weight
        for i, table in enumerate(self.point_embeddings):
            emb = emb + (labels == i) * table.weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        return corners + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty((bs, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse_embeddings, dense


# ----------------------------------------------------------------------------- mask decoder


class MLPBlock(nn.Module):
    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may downscale the width (``downsample_rate``)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the attention width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image cross-attention, token MLP, image-to-token cross-attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM's two-way transformer: tokens and image embedding attend to each other, then a final
    token-to-image attention."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nn.Module):
    """SAM's mask decoder: IoU and mask tokens through the two-way transformer, a 4x transposed-conv
    upscaling of the image embedding, one hypernetwork MLP per mask token, an IoU head."""

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer(embedding_dim=transformer_dim)
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4, eps=1e-6),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks and IoU predictions. Image embeddings of batch 1 serve
        every prompt (SAM's ``repeat_interleave``); batch B pairs row i with prompt i."""
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] != n:
            image_embeddings = torch.repeat_interleave(image_embeddings, n, dim=0)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, n, dim=0) if image_pe.shape[0] != n else image_pe
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


# ----------------------------------------------------------------------------- the model


class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, with SAM's state-dict names.

    ``arch`` records how the image encoder was built (``kind`` = ``"vit"``, ``"tinyvit"`` or
    ``"backbone"`` and its arguments) so that :meth:`authors_reference` can rebuild it with the
    authors' code.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        img_size: int = 1024,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        arch: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.img_size = img_size
        self.image_embedding_size = tuple(prompt_encoder.image_embedding_size)
        self.embed_dim = prompt_encoder.embed_dim
        self.arch = dict(arch or {})

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- image side

    def check_images(self, images: torch.Tensor) -> None:
        check_image(images, channels=3, name="images", value_range=(0.0, 1.0))
        if images.shape[-2] > self.img_size or images.shape[-1] > self.img_size:
            raise ValueError(
                f"images: expected height and width of at most img_size={self.img_size} (resize the long side first,"
                f" as SamPredictor does), got {tuple(images.shape[-2:])}"
            )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> 0-255, normalised, zero-padded bottom / right to ``img_size`` (SAM's)."""
        x = (images * 255.0 - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, 256, img_size/16, img_size/16) of RGB images in [0, 1]."""
        self.check_images(images)
        return self.image_encoder(self.preprocess(images))

    # -- prompt side

    def _check_prompts(self, image_embeddings, point_coords, point_labels, boxes, mask_inputs) -> None:
        if is_exporting():
            return
        e = self.image_embedding_size
        if image_embeddings.ndim != 4 or image_embeddings.shape[1] != self.embed_dim or tuple(image_embeddings.shape[-2:]) != e:
            raise ValueError(
                f"image_embeddings: expected a 4-D tensor (B, {self.embed_dim}, {e[0]}, {e[1]}), got shape {tuple(image_embeddings.shape)}"
            )
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels go together: give both or neither")
        if point_coords is None and boxes is None and mask_inputs is None:
            raise ValueError("no prompt: give point_coords + point_labels, boxes or mask_inputs")
        sizes = {}
        if point_coords is not None:
            if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
                raise ValueError(f"point_coords: expected (B, N, 2) (x, y) in the padded input frame, got shape {tuple(point_coords.shape)}")
            if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
                raise ValueError(
                    f"point_labels: expected shape {tuple(point_coords.shape[:2])} (one label per point), got {tuple(point_labels.shape)}"
                )
            sizes["point_coords"] = point_coords.shape[0]
        if boxes is not None:
            if boxes.shape[-1] != 4 or boxes.ndim not in (2, 3) or (boxes.ndim == 3 and boxes.shape[1] != 1):
                raise ValueError(f"boxes: expected (B, 4) (x0, y0, x1, y1) in the padded input frame, got shape {tuple(boxes.shape)}")
            sizes["boxes"] = boxes.shape[0]
        if mask_inputs is not None:
            m = self.prompt_encoder.mask_input_size
            if mask_inputs.ndim != 4 or mask_inputs.shape[1] != 1 or tuple(mask_inputs.shape[-2:]) != tuple(m):
                raise ValueError(f"mask_inputs: expected (B, 1, {m[0]}, {m[1]}) low-res logits, got shape {tuple(mask_inputs.shape)}")
            if not mask_inputs.is_floating_point():
                raise ValueError(f"mask_inputs: expected floating-point logits, got dtype {mask_inputs.dtype}")
            sizes["mask_inputs"] = mask_inputs.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        n = next(iter(sizes.values()))
        if image_embeddings.shape[0] not in (1, n):
            raise ValueError(f"image_embeddings: batch {image_embeddings.shape[0]} serves neither every prompt (1) nor one prompt each ({n})")

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits (B, C, 4h, 4w) and IoU predictions (B, C), C = 3 with
        ``multimask_output`` else 1. Coordinates are pixels (x, y) of the padded ``img_size``
        input; an embedding batch of 1 serves all B prompts."""
        self._check_prompts(image_embeddings, point_coords, point_labels, boxes, mask_inputs)
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]) -> torch.Tensor:
        """Upscale to ``img_size``, crop the padding off (``input_size``: the resized image's
        (H, W)), resize to ``original_size`` (H, W); bilinear, as SAM."""
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def example_loss(self, images: torch.Tensor) -> torch.Tensor:
        """A scalar reaching every parameter: the embeddings, a two-point prompt (padding point,
        single-mask output) and a box + mask prompt (multimask output)."""
        emb = self(images)
        b = images.shape[0]
        s = float(self.img_size)
        pts = torch.tensor([[0.25, 0.5], [0.75, 0.4]], device=emb.device).mul(s).expand(b, 2, 2)
        labels = torch.tensor([1, 0], device=emb.device).expand(b, 2)
        low1, iou1 = self.predict_masks(emb, pts, labels, multimask_output=False)
        box = torch.tensor([0.1, 0.2, 0.8, 0.9], device=emb.device).mul(s).expand(b, 4)
        low2, iou2 = self.predict_masks(emb, boxes=box, mask_inputs=low1, multimask_output=True)
        return emb.pow(2).mean() + low1.pow(2).mean() + low2.pow(2).mean() + iou1.pow(2).mean() + iou2.pow(2).mean()

    # -- the authors' implementation

    def authors_reference(self) -> nn.Module:
        """The authors' modules (segment_anything's ``Sam``, or mobile_sam's with ``TinyViT``)
        holding this model's weights, wrapped to be called like this model (``forward(images)``,
        ``predict_masks``, ``postprocess_masks``)."""
        from zoo.reference import ReferenceUnavailable

        kind = self.arch.get("kind")
        if kind == "vit":
            pkg = _import_authors("segment_anything")
            m = pkg.modeling
            enc = m.ImageEncoderViT(
                depth=self.arch["depth"],
                embed_dim=self.arch["embed_dim"],
                img_size=self.img_size,
                mlp_ratio=self.arch.get("mlp_ratio", 4.0),
                norm_layer=_partial_ln(),
                num_heads=self.arch["num_heads"],
                patch_size=16,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=tuple(self.arch["global_attn_indexes"]),
                window_size=self.arch.get("window_size", 14),
                out_chans=self.embed_dim,
            )
        elif kind == "tinyvit":
            if self.img_size != 1024:
                raise ReferenceUnavailable("mobile_sam's TinyViT hard-codes the 64x64 grid of a 1024x1024 input")
            if self.arch["embed_dims"][-1] not in (320, 448, 576):
                raise ReferenceUnavailable("mobile_sam's TinyViT keeps the last merge at stride 1 only for widths 320, 448, 576")
            pkg = _import_authors("mobile_sam")
            m = pkg.modeling
            enc = m.TinyViT(
                img_size=self.img_size,
                in_chans=3,
                num_classes=1000,
                embed_dims=list(self.arch["embed_dims"]),
                depths=list(self.arch["depths"]),
                num_heads=list(self.arch["num_heads"]),
                window_sizes=list(self.arch["window_sizes"]),
                mlp_ratio=4.0,
                drop_rate=0.0,
                drop_path_rate=0.0,
                use_checkpoint=False,
                mbconv_expand_ratio=4.0,
                local_conv_size=3,
                layer_lr_decay=0.8,
            )
        else:
            name = getattr(self, "zoo_name", type(self).__name__)
            raise ReferenceUnavailable(f"{name}: the authors publish no implementation of this encoder")
        pe, md = self.prompt_encoder, self.mask_decoder
        tr = md.transformer
        sam = m.Sam(
            image_encoder=enc,
            prompt_encoder=m.PromptEncoder(
                embed_dim=pe.embed_dim,
                image_embedding_size=pe.image_embedding_size,
                input_image_size=pe.input_image_size,
                mask_in_chans=pe.mask_downscaling[3].out_channels,
            ),
            mask_decoder=m.MaskDecoder(
                num_multimask_outputs=md.num_multimask_outputs,
                transformer=m.TwoWayTransformer(depth=tr.depth, embedding_dim=tr.embedding_dim, mlp_dim=tr.mlp_dim, num_heads=tr.num_heads),
                transformer_dim=md.transformer_dim,
                iou_head_depth=md.iou_prediction_head.num_layers,
                iou_head_hidden_dim=md.iou_prediction_head.layers[0].out_features,
            ),
            pixel_mean=self.pixel_mean.flatten().tolist(),
            pixel_std=self.pixel_std.flatten().tolist(),
        )
        sd = to_authors_sam({k: v.detach().to("cpu").clone() for k, v in self.state_dict().items()})
        missing, unexpected = sam.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith(TINYVIT_HEAD_PREFIXES)]  # the unused ImageNet head
        if missing or unexpected:
            raise ReferenceUnavailable(
                f"the authors' module does not take this state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        ref = AuthorsSam(sam).to(self.device)
        ref.eval()  # after loading: mobile_sam's TinyViT caches its attention biases in eval()
        ref.train(self.training)
        ref.reference_arch = f"{type(sam).__module__}.Sam[{type(enc).__name__}]"
        return ref


class AuthorsSam(nn.Module):
    """The authors' ``Sam`` called like :class:`Sam` (for ``zoo bench --compare authors`` and the
    parity tests)."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam
        self.img_size = sam.image_encoder.img_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(self.sam.preprocess(images * 255.0))

    def predict_masks(self, image_embeddings, point_coords=None, point_labels=None, boxes=None, mask_inputs=None, multimask_output=True):
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        pe = self.sam.prompt_encoder.get_dense_pe()
        if image_embeddings.shape[0] == 1 or image_embeddings.shape[0] != sparse.shape[0]:
            return self.sam.mask_decoder(image_embeddings, pe, sparse, dense, multimask_output)
        outs = [
            self.sam.mask_decoder(image_embeddings[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1], multimask_output)
            for i in range(sparse.shape[0])
        ]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def postprocess_masks(self, masks, input_size, original_size):
        return self.sam.postprocess_masks(masks, input_size, original_size)


def _partial_ln():
    from functools import partial

    return partial(nn.LayerNorm, eps=1e-6)


_TIMM_REGISTRY_TABLES = (
    "_module_to_models", "_model_to_module", "_model_entrypoints", "_model_has_pretrained",
    "_model_default_cfgs", "_model_pretrained_cfgs", "_model_with_tags",
)


def _import_authors(name: str):
    """Import ``segment_anything`` or ``mobile_sam``. mobile_sam registers its TinyViT classifiers
    in timm's registry under timm's own names (``tiny_vit_5m_224`` ...): timm's tables are
    restored afterwards, so that importing it changes nothing else in the process."""
    from timm.models import _registry as reg
    from zoo.reference import ReferenceUnavailable

    saved = {t: copy.copy(getattr(reg, t)) for t in _TIMM_REGISTRY_TABLES if hasattr(reg, t)}
    saved_inner = {t: {k: copy.copy(v) for k, v in tab.items()} for t, tab in saved.items() if isinstance(tab, dict)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(name)
            importlib.import_module(f"{name}.modeling")
    except ImportError as e:
        dist = "segment-anything" if name == "segment_anything" else "mobilesam-mirror"
        raise ReferenceUnavailable(f"{name} is not installed ({e}); pip install {dist}") from None
    finally:
        for t, tab in saved.items():
            live = getattr(reg, t)
            live.clear()
            if isinstance(live, dict):
                live.update(saved_inner[t])
            else:
                live.update(tab)
    return mod


# ----------------------------------------------------------------------------- builders


def _heads(img_size: int, encoder: nn.Module, arch: dict[str, Any], prompt_embed_dim: int = 256, mask_in_chans: int = 16,
           decoder_depth: int = 2, decoder_mlp_dim: int = 2048, decoder_heads: int = 8, num_multimask_outputs: int = 3,
           iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> Sam:
    if img_size % 16:
        raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
    grid = img_size // 16
    prompt_encoder = PromptEncoder(prompt_embed_dim, (grid, grid), (img_size, img_size), mask_in_chans)
    mask_decoder = MaskDecoder(
        transformer_dim=prompt_embed_dim,
        transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_embed_dim, num_heads=decoder_heads, mlp_dim=decoder_mlp_dim),
        num_multimask_outputs=num_multimask_outputs,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    return Sam(encoder, prompt_encoder, mask_decoder, img_size=img_size, arch=arch)


def build_sam_vit(
    img_size: int = 1024,
    encoder_embed_dim: int = 768,
    encoder_depth: int = 12,
    encoder_num_heads: int = 12,
    encoder_global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    encoder_window_size: int = 14,
    **head_kwargs: Any,
) -> Sam:
    """SAM with its ViT image encoder (``segment_anything``'s ``_build_sam``)."""
    prompt_dim = head_kwargs.get("prompt_embed_dim", 256)
    enc = ImageEncoderViT(
        img_size=img_size, embed_dim=encoder_embed_dim, depth=encoder_depth, num_heads=encoder_num_heads,
        global_attn_indexes=tuple(encoder_global_attn_indexes), window_size=encoder_window_size, out_chans=prompt_dim,
    )
    arch = dict(kind="vit", embed_dim=encoder_embed_dim, depth=encoder_depth, num_heads=encoder_num_heads,
                global_attn_indexes=tuple(encoder_global_attn_indexes), window_size=encoder_window_size)
    return _heads(img_size, enc, arch, **head_kwargs)


def build_mobile_sam(
    img_size: int = 1024,
    embed_dims: Sequence[int] = (64, 128, 160, 320),
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (2, 4, 5, 10),
    window_sizes: Sequence[int] = (7, 7, 14, 7),
    **head_kwargs: Any,
) -> Sam:
    """MobileSAM: TinyViT image encoder (``mobile_sam``'s ``build_sam_vit_t``)."""
    enc = TinyViT(img_size=img_size, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                  window_sizes=window_sizes, out_chans=head_kwargs.get("prompt_embed_dim", 256))
    arch = dict(
        kind="tinyvit", embed_dims=tuple(embed_dims), depths=tuple(depths), num_heads=tuple(num_heads), window_sizes=tuple(window_sizes)
    )
    return _heads(img_size, enc, arch, **head_kwargs)


def sam_with_backbone(
    backbone_name: str,
    img_size: int = 1024,
    upsample_mode: str = "bicubic",
    backbone_args: dict[str, Any] | None = None,
    **head_kwargs: Any,
) -> Sam:
    """SAM's prompt encoder and mask decoder on any zoo or timm backbone that has
    ``features_only``: its stride >= 16 stages are projected, fused on the stride-16 grid and put
    through SAM's neck (:class:`~zoo.models.sam_encoders.BackboneNeckEncoder`)."""
    backbone = build_feature_backbone(backbone_name, **(backbone_args or {}))
    enc = BackboneNeckEncoder(backbone, img_size=img_size, out_chans=head_kwargs.get("prompt_embed_dim", 256), upsample_mode=upsample_mode)
    return _heads(img_size, enc, dict(kind="backbone", backbone=backbone_name), **head_kwargs)


# ----------------------------------------------------------------------------- registry


def _sam_cfg(file: str) -> PretrainedCfg:
    return PretrainedCfg(
        tag="sa1b",
        url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}",
        sha256=None,
        verified=False,
        license="Apache-2.0",
        filter_fn=filter_sam,
        description="The authors' SA-1B weights (facebookresearch/segment-anything)",
    )


_MOBILE_SAM_CFG = PretrainedCfg(
    tag="authors",
    url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    sha256=None,
    verified=False,
    license="Apache-2.0",
    filter_fn=filter_mobile_sam,
    description="The authors' TinyViT distilled from SAM ViT-H on 1% of SA-1B (ChaoningZhang/MobileSAM weights/mobile_sam.pt)",
)

_SEG = dict(task="segmentation", input_size=(3, 1024, 1024), input_range=(0.0, 1.0), license="Apache-2.0")
_TEST_SIZE = (3, 96, 128)  # < img_size on one side: the padding path runs
_SMALL_VIT = dict(
    img_size=128, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,), encoder_window_size=5
)


@register_model(
    family="mobile_sam", paper=_MSAM_PAPER, arxiv=_MSAM_ARXIV, source=_MSAM_SOURCE, **_SEG,
    params=9_808_452, gmacs=38.768295424, pretrained_cfgs=[_MOBILE_SAM_CFG],
    test_size=_TEST_SIZE, test_args=dict(img_size=128),
    description="MobileSAM: TinyViT-5M image encoder distilled from SAM ViT-H, SAM's prompt encoder and mask decoder",
)
def mobile_sam_vit_t(img_size: int = 1024, **kwargs: Any) -> Sam:
    return build_mobile_sam(img_size=img_size, **kwargs)


@register_model(
    family="mobile_sam", paper=_EDGESAM_PAPER, arxiv=_EDGESAM_ARXIV, source=_EDGESAM_SOURCE, **_SEG,
    params=9_582_112, gmacs=20.04563968, test_size=_TEST_SIZE, test_args=dict(img_size=128),
    description="SAM's prompt encoder and mask decoder on timm's RepViT-M1 with EdgeSAM's fusion neck (no published weights)",
)
def mobile_sam_repvit(img_size: int = 1024, backbone: str = "repvit_m1", **kwargs: Any) -> Sam:
    return sam_with_backbone(backbone, img_size=img_size, **kwargs)


@register_model(
    family="sam", paper=_SAM_PAPER, arxiv=_SAM_ARXIV, source=_SAM_SOURCE, **_SEG,
    params=93_735_472, gmacs=486.038667264, pretrained_cfgs=[_sam_cfg("sam_vit_b_01ec64.pth")],
    test_size=_TEST_SIZE, test_args=_SMALL_VIT,
    description="SAM with the ViT-B image encoder",
)
def sam_vit_b(img_size: int = 1024, **kwargs: Any) -> Sam:
    args = dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11))
    return build_sam_vit(img_size=img_size, **{**args, **kwargs})


@register_model(
    family="sam", paper=_SAM_PAPER, arxiv=_SAM_ARXIV, source=_SAM_SOURCE, **_SEG,
    params=312_342_832, gmacs=1492.840153088, pretrained_cfgs=[_sam_cfg("sam_vit_l_0b3195.pth")],
    test_size=_TEST_SIZE, test_args=_SMALL_VIT,
    description="SAM with the ViT-L image encoder",
)
def sam_vit_l(img_size: int = 1024, **kwargs: Any) -> Sam:
    args = dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23))
    return build_sam_vit(img_size=img_size, **{**args, **kwargs})


@register_model(
    family="sam", paper=_SAM_PAPER, arxiv=_SAM_ARXIV, source=_SAM_SOURCE, **_SEG,
    params=641_090_608, gmacs=2980.541415424, pretrained_cfgs=[_sam_cfg("sam_vit_h_4b8939.pth")],
    test_size=_TEST_SIZE, test_args=_SMALL_VIT,
    description="SAM with the ViT-H image encoder (MobileSAM's distillation teacher)",
)
def sam_vit_h(img_size: int = 1024, **kwargs: Any) -> Sam:
    args = dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31))
    return build_sam_vit(img_size=img_size, **{**args, **kwargs})
