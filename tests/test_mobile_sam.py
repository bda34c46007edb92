"""SAM / MobileSAM models against the authors' code (segment-anything, mobilesam-mirror on PyPI).

Random-weight parity: one seeded state dict in the authors' layout is loaded into the authors'
modules and, through the registered filter function (the path of the authors' published files),
into ours; image embeddings, low-res mask logits and IoU predictions must agree to 1e-4
relative (max abs difference / max abs value) for point, box and mask prompts.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError
from zoo.models.mobile_sam import PIXEL_MEAN, PIXEL_STD, Sam, _import_authors, sam_with_backbone
from zoo.reference import ReferenceUnavailable
from zoo.weights.sam_filters import TINYVIT_HEAD_PREFIXES, filter_mobile_sam, filter_sam, to_authors_sam

RTOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def seeded(state_dict: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of the same keys and shapes: fan-in scaled weights, norm scales near 1,
    small biases, positive BN variances, N(0, 1) Fourier matrix (as SAM initialises it)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state_dict.items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        r = torch.randn(v.shape, generator=g)
        if k.endswith("running_var"):
            t = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("positional_encoding_gaussian_matrix"):
            t = r
        elif k.endswith("pos_embed") or v.ndim == 1 and not k.endswith("weight"):
            t = 0.1 * r  # biases, running means, absolute positions
        elif v.ndim == 1:
            t = 1.0 + 0.1 * r  # norm scales
        else:
            t = r / math.sqrt(max(1, v[0].numel()))
        out[k] = t
    return out


# ---------------------------------------------------------------- the authors' modules, built here

SMALL_VIT = dict(embed_dim=64, depth=3, num_heads=4, global_attn_indexes=(1,), window_size=5)
SMALL_IMG = 256


def authors_small_sam():
    """segment_anything's classes at a reduced size: ViT 64 wide, 3 blocks (block 1 global,
    the others 5x5 windows on a 16x16 grid, so the padding path runs), SAM's full decoder."""
    m = _import_authors("segment_anything").modeling
    grid = SMALL_IMG // 16
    enc = m.ImageEncoderViT(
        depth=SMALL_VIT["depth"], embed_dim=SMALL_VIT["embed_dim"], img_size=SMALL_IMG, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=SMALL_VIT["num_heads"], patch_size=16, qkv_bias=True,
        use_rel_pos=True, global_attn_indexes=list(SMALL_VIT["global_attn_indexes"]), window_size=SMALL_VIT["window_size"], out_chans=256,
    )
    pe = m.PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(SMALL_IMG, SMALL_IMG), mask_in_chans=16)
    md = m.MaskDecoder(
        num_multimask_outputs=3, transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return m.Sam(image_encoder=enc, prompt_encoder=pe, mask_decoder=md, pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD))


def authors_embed(sam, images: torch.Tensor) -> torch.Tensor:
    return sam.image_encoder(sam.preprocess(images * 255.0))


def authors_decode(sam, emb, coords=None, labels=None, boxes=None, masks=None, multimask=True):
    points = (coords, labels) if coords is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
    return sam.mask_decoder(
        image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=multimask,
    )


def prompt_cases(img: int, gen: torch.Generator) -> list[tuple[str, dict]]:
    s = float(img)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.6], [0.3, 0.1, 0.9, 0.95]]) * s
    return [
        ("points", dict(coords=torch.rand(3, 2, 2, generator=gen) * s, labels=torch.tensor([[1, 0], [1, 1], [0, 1]]))),
        ("points_with_pad_label", dict(coords=torch.rand(1, 3, 2, generator=gen) * s, labels=torch.tensor([[1, -1, 0]]))),
        ("box", dict(boxes=boxes)),
        ("box_and_point", dict(coords=torch.rand(2, 1, 2, generator=gen) * s, labels=torch.tensor([[0], [1]]), boxes=boxes)),
        (
            "mask_and_point",
            dict(coords=torch.rand(1, 1, 2, generator=gen) * s, labels=torch.tensor([[1]]), masks=torch.randn(1, 1, img // 4, img // 4, generator=gen) * 4),
        ),
        ("mask", dict(masks=torch.randn(2, 1, img // 4, img // 4, generator=gen) * 4)),
    ]


def ours_decode(model: Sam, emb, coords=None, labels=None, boxes=None, masks=None, multimask=True):
    return model.predict_masks(emb, point_coords=coords, point_labels=labels, boxes=boxes, mask_inputs=masks, multimask_output=multimask)


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    """The reduced authors' SAM and ours, both holding the same seeded weights; ours loaded from
    an authors'-layout file through the registered filter."""
    torch.manual_seed(0)
    ref = authors_small_sam()
    sd = seeded(ref.state_dict(), seed=1)
    ref.load_state_dict(sd)
    f = tmp_path_factory.mktemp("sam") / "sam_small.pth"
    torch.save(sd, f)
    ours = zoo.create(
        "sam_vit_b", checkpoint_path=f, img_size=SMALL_IMG, encoder_embed_dim=SMALL_VIT["embed_dim"],
        encoder_depth=SMALL_VIT["depth"], encoder_num_heads=SMALL_VIT["num_heads"],
        encoder_global_attn_indexes=SMALL_VIT["global_attn_indexes"], encoder_window_size=SMALL_VIT["window_size"],
    )
    return ref.eval(), ours.eval()


def test_small_sam_embeddings_and_masks_match_authors(small_pair):
    ref, ours = small_pair
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 200, SMALL_IMG, generator=g)  # landscape: bottom padding
    with torch.no_grad():
        emb, emb_ref = ours(images), authors_embed(ref, images)
        assert emb.shape == (2, 256, 16, 16)
        assert rel_err(emb, emb_ref) < RTOL
        for name, case in prompt_cases(SMALL_IMG, g):
            for multimask in (True, False):
                low, iou = ours_decode(ours, emb[:1], multimask=multimask, **case)
                low_ref, iou_ref = authors_decode(ref, emb_ref[:1], multimask=multimask, **case)
                c = 3 if multimask else 1
                assert low.shape[1:] == (c, 64, 64) and iou.shape[1:] == (c,)
                assert rel_err(low, low_ref) < RTOL, name
                assert rel_err(iou, iou_ref) < RTOL, name
        # one embedding per prompt (batch B pairs row i with prompt i): the authors' per image
        boxes = torch.tensor([[10.0, 20.0, 120.0, 150.0], [40.0, 5.0, 250.0, 190.0]])
        low, iou = ours.predict_masks(emb, boxes=boxes)
        for i in range(2):
            low_ref, iou_ref = authors_decode(ref, emb_ref[i : i + 1], boxes=boxes[i : i + 1])
            assert rel_err(low[i : i + 1], low_ref) < RTOL and rel_err(iou[i : i + 1], iou_ref) < RTOL
        # postprocessing: the authors' Sam.postprocess_masks
        up = ours.postprocess_masks(low, (200, SMALL_IMG), (300, 384))
        assert up.shape == (2, 3, 300, 384)
        assert rel_err(up, ref.postprocess_masks(low, (200, SMALL_IMG), (300, 384))) < 1e-6


def test_small_sam_authors_reference(small_pair):
    """``authors_reference()`` (what ``zoo bench --compare authors`` runs) rebuilds the same
    network with segment_anything's modules and our weights."""
    _, ours = small_pair
    ref = ours.authors_reference()
    assert type(ref.sam).__module__.startswith("segment_anything")
    images = torch.rand(1, 3, SMALL_IMG, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        emb = ours(images)
        assert rel_err(emb, ref(images)) < RTOL
        pts, lab = torch.tensor([[[30.0, 40.0], [100.0, 200.0]]]), torch.tensor([[1, 0]])
        for a, b in zip(ours.predict_masks(emb, pts, lab), ref.predict_masks(emb, pts, lab)):
            assert rel_err(a, b) < RTOL


def test_full_mobile_sam_matches_authors(tmp_path):
    """Full-size mobile_sam_vit_t at 1024 against mobile_sam's ``build_sam_vit_t``: a seeded
    state dict saved as the authors' ``mobile_sam.pt`` layout (with the unused ImageNet head)
    loads through the registered cfg and gives the authors' embeddings and masks."""
    ms = _import_authors("mobile_sam")
    torch.manual_seed(0)
    ref = ms.build_sam_vit_t()
    sd = seeded(ref.state_dict(), seed=4)
    assert any(k.startswith(TINYVIT_HEAD_PREFIXES) for k in sd)
    ref.load_state_dict(sd)
    ref.eval()  # mobile_sam caches TinyViT's attention biases in eval(): after loading
    f = tmp_path / "mobile_sam.pt"
    torch.save(sd, f)
    ours = zoo.create("mobile_sam_vit_t", checkpoint_path=f).eval()
    g = torch.Generator().manual_seed(5)
    images = torch.rand(1, 3, 768, 1024, generator=g)
    with torch.no_grad():
        emb, emb_ref = ours(images), authors_embed(ref, images)
        assert emb.shape == (1, 256, 64, 64)
        assert rel_err(emb, emb_ref) < RTOL
        for name, case in prompt_cases(1024, g)[::2]:  # points, box, mask + point
            low, iou = ours_decode(ours, emb, **case)
            low_ref, iou_ref = authors_decode(ref, emb_ref, **case)
            assert low.shape[-2:] == (256, 256)
            assert rel_err(low, low_ref) < RTOL, name
            assert rel_err(iou, iou_ref) < RTOL, name


# ---------------------------------------------------------------- sizes and names of the authors' models


@pytest.mark.parametrize("name,builder", [("sam_vit_b", "build_sam_vit_b"), ("sam_vit_l", "build_sam_vit_l"), ("sam_vit_h", "build_sam_vit_h")])
def test_sam_params_and_state_dict_names_equal_authors(name, builder):
    sa = _import_authors("segment_anything")
    with torch.device("meta"):
        ref = getattr(sa, builder)()
        ours = zoo.create(name)
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        assert count_params(getattr(ours, part)) == count_params(getattr(ref, part)), part
    assert count_params(ours) == count_params(ref) == zoo.info(name)["params"]
    theirs = filter_sam(ref.state_dict())
    mine = ours.state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in mine.items()}
    ours.load_state_dict(theirs, strict=True, assign=True)
    assert set(to_authors_sam(mine)) == set(ref.state_dict())


def test_mobile_sam_params_and_state_dict_names_equal_authors():
    ms = _import_authors("mobile_sam")
    ref = ms.build_sam_vit_t()  # mobile_sam's TinyViT reads values while building: no meta device
    with torch.device("meta"):
        ours = zoo.create("mobile_sam_vit_t")
    head = count_params(ref.image_encoder.norm_head) + count_params(ref.image_encoder.head)
    assert head == 320 * 2 + 320 * 1000 + 1000  # the ImageNet classifier the segmentation model never runs
    assert count_params(ours.image_encoder) == count_params(ref.image_encoder) - head
    for part in ("prompt_encoder", "mask_decoder"):
        assert count_params(getattr(ours, part)) == count_params(getattr(ref, part)), part
    assert count_params(ours) == count_params(ref) - head == zoo.info("mobile_sam_vit_t")["params"]
    theirs = filter_mobile_sam(ref.state_dict())
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(theirs, strict=True, assign=True)
    authors_names = {k for k in ref.state_dict() if not k.startswith(TINYVIT_HEAD_PREFIXES)}
    assert set(to_authors_sam(ours.state_dict())) == authors_names


def test_importing_mobile_sam_leaves_timm_registry_alone():
    import timm
    from timm.models import _registry

    _import_authors("mobile_sam")
    assert _registry._model_entrypoints["tiny_vit_5m_224"].__module__ == "timm.models.tiny_vit"
    assert type(timm.create_model("tiny_vit_5m_224", pretrained=False)).__module__ == "timm.models.tiny_vit"


# ---------------------------------------------------------------- the swappable encoder


def test_sam_with_zoo_backbone_and_repvit():
    m = sam_with_backbone("resnet18", img_size=128).eval()  # a zoo backbone: stride-16 and 32 stages fused
    assert len(m.image_encoder.lateral) == 2
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        emb = m(x)
        assert emb.shape == (2, 256, 8, 8)
        low, iou = m.predict_masks(emb[:1], boxes=torch.tensor([[4.0, 4.0, 60.0, 90.0]]))
    assert low.shape == (1, 3, 32, 32) and iou.shape == (1, 3)
    r = zoo.create("mobile_sam_repvit", img_size=128)
    assert [f["num_chs"] for f in r.image_encoder.backbone.feature_info.get_dicts()][2:] == [192, 384]
    with pytest.raises(ReferenceUnavailable):
        r.authors_reference()


# ---------------------------------------------------------------- bad input


TINY = dict(img_size=64, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, encoder_global_attn_indexes=(0,))


@pytest.fixture(scope="module")
def tiny():
    return zoo.create("sam_vit_b", **TINY).eval()


def test_bad_images(tiny):
    x = torch.rand(1, 3, 64, 48)
    for bad, msg in [
        (torch.rand(1, 4, 64, 64), "expected 3 channels"),
        (x[0], "4-D"),
        ((x * 255).to(torch.uint8), "floating-point"),
        (x * 255, "expected values in"),
        (torch.rand(1, 3, 80, 64), "at most img_size=64"),
    ]:
        with pytest.raises(ValueError, match=msg):
            tiny(bad)


def test_bad_prompts(tiny):
    emb = torch.zeros(1, 256, 4, 4)
    pts, lab = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[1]])
    for kwargs, msg in [
        (dict(), "no prompt"),
        (dict(point_coords=pts), "go together"),
        (dict(point_coords=pts[0], point_labels=lab), r"\(B, N, 2\)"),
        (dict(point_coords=pts, point_labels=torch.tensor([[1, 0]])), "one label per point"),
        (dict(boxes=torch.tensor([1.0, 2.0, 3.0])), r"\(B, 4\)"),
        (dict(mask_inputs=torch.zeros(1, 1, 8, 8)), r"\(B, 1, 16, 16\)"),
        (dict(mask_inputs=torch.zeros(1, 1, 16, 16, dtype=torch.uint8)), "floating-point"),
        (dict(point_coords=pts.expand(2, 1, 2), point_labels=lab.expand(2, 1), boxes=torch.zeros(3, 4)), "batch sizes differ"),
    ]:
        with pytest.raises(ValueError, match=msg):
            tiny.predict_masks(emb, **kwargs)
    with pytest.raises(ValueError, match=r"image_embeddings: expected a 4-D tensor \(B, 256, 4, 4\)"):
        tiny.predict_masks(torch.zeros(1, 256, 8, 8), boxes=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="serves neither"):
        tiny.predict_masks(torch.zeros(2, 256, 4, 4), boxes=torch.zeros(3, 4))


def test_foreign_checkpoint_is_a_clear_error(tmp_path):
    f = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, f)
    with pytest.raises(CheckpointError, match="not a SAM state dict"):
        zoo.create("sam_vit_b", checkpoint_path=f, **TINY)
    with pytest.raises(CheckpointError, match="not a MobileSAM state dict"):
        zoo.create("mobile_sam_vit_t", checkpoint_path=f, img_size=128)


def test_mobile_sam_reference_needs_1024():
    with pytest.raises(ReferenceUnavailable, match="64x64"):
        zoo.create("mobile_sam_vit_t", img_size=128).authors_reference()
