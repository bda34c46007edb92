"""Automatic mask generation: parity with segment-anything's SamAutomaticMaskGenerator and its
helpers, RLE encodings (checked against pycocotools' output) and small-region removal.

Random-weight SAM models give masks that nearly all span the whole image, which leaves little
for filtering and NMS to do. The end-to-end parity runs therefore also use a toy promptable
model (``_ToySam``): its "decoder" scores each low-res cell by colour similarity to the clicked
cell and distance to the click, so masks are regions of different sizes, and both generators
drive it through their own predictors (resize, coordinate transform, post-processing)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo.tasks.segmentation import amg
from zoo.tasks.segmentation.amg import SamAutomaticMaskGenerator

import zoo
from zoo.registry import get_entry

sa = pytest.importorskip("segment_anything", reason="segment-anything (the authors' code) is a test dependency")
from segment_anything.utils import amg as sa_amg

RECORD_KEYS = ("area", "bbox", "point_coords", "crop_box")


# ----------------------------------------------------------------------------------- toy model
def _toy_logits(emb: torch.Tensor, coords: torch.Tensor, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """emb (1, 3, g, g) cell colours; coords (B, N, 2) model-input pixels (first point used)."""
    g = emb.shape[-1]
    p = coords[:, 0, :].to(torch.float64)  # (B, 2) x, y
    cell = (p / 4).floor().long().clamp(0, g - 1)
    col = emb[0][:, cell[:, 1], cell[:, 0]].T.to(torch.float64)  # (B, 3)
    dcol = (emb[0].to(torch.float64)[None] - col[:, :, None, None]).abs().sum(1)  # (B, g, g)
    centres = (torch.arange(g, dtype=torch.float64) + 0.5) * 4
    dist = ((centres[None, None, :] - p[:, 0, None, None]) ** 2 + (centres[None, :, None] - p[:, 1, None, None]) ** 2).sqrt()
    radii = torch.tensor([0.15, 0.3, 0.6], dtype=torch.float64) * 4 * g
    logits = 12.0 * (1 - dist[:, None] / radii[None, :, None, None]) - 25.0 * dcol[:, None]  # (B, 3, g, g)
    fg = logits > 0
    iou = ((fg & (dcol[:, None] < 0.15)).sum((-1, -2)).double() / (fg.sum((-1, -2)).double() + 1.0))
    logits, iou = logits.float(), iou.float()
    if not multimask:
        logits, iou = logits[:, 1:2], iou[:, 1:2]
    return logits, iou


def _postprocess(masks, input_size, original_size, img_size):
    masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)


class _ToySam(nn.Module):
    """Our contract: forward([0,1] images) -> "embedding" (cell colours), predict_masks, postprocess_masks."""

    img_size = 128
    mask_threshold = 0.0

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a device / dtype for the predictor

    def forward(self, images):
        h, w = images.shape[-2:]
        x = F.pad(images, (0, self.img_size - w, 0, self.img_size - h))
        return F.avg_pool2d(x, 4)

    def predict_masks(self, image_embeddings, point_coords=None, point_labels=None, boxes=None, mask_inputs=None, multimask_output=True):
        return _toy_logits(image_embeddings, point_coords, multimask_output)

    def postprocess_masks(self, masks, input_size, original_size):
        return _postprocess(masks, input_size, original_size, self.img_size)


class _AuthorsToySam(nn.Module):
    """The same toy behind segment-anything's module interface (image_encoder, preprocess,
    prompt_encoder, mask_decoder, postprocess_masks)."""

    mask_threshold = 0.0
    image_format = "RGB"

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        toy = _ToySam()
        self.image_encoder = _Callable(lambda x: F.avg_pool2d(x, 4), img_size=toy.img_size)
        self.prompt_encoder = _Callable(lambda points=None, boxes=None, masks=None: (points[0], None), get_dense_pe=lambda: None)
        self.mask_decoder = _Callable(lambda image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                      multimask_output: _toy_logits(image_embeddings, sparse_prompt_embeddings, multimask_output))
        self.img_size = toy.img_size

    @property
    def device(self):
        return self.anchor.device

    def preprocess(self, x):
        h, w = x.shape[-2:]
        return F.pad(x / 255.0, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(self, masks, input_size, original_size):
        return _postprocess(masks, input_size, original_size, self.img_size)


class _Callable:
    def __init__(self, fn, **attrs):
        self.fn = fn
        self.__dict__.update(attrs)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Shapes on a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([40 + 30 * np.sin(xx / 7.0), 60 + 20 * np.cos(yy / 5.0), 50 + 0 * xx], -1)
    img[(yy - 30) ** 2 + (xx - 35) ** 2 < 18 ** 2] = [220, 40, 40]
    img[60:90, 70:120] = [40, 200, 60]
    img[10:40, 80:100] = [240, 230, 30]
    img[(yy - 75) ** 2 / 12 ** 2 + (xx - 25) ** 2 / 20 ** 2 < 1] = [30, 60, 230]
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _compare(ours: list[dict], ref: list[dict], seg_equal) -> None:
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        for k in RECORD_KEYS:
            assert o[k] == r[k], k
        assert abs(o["predicted_iou"] - r["predicted_iou"]) < 1e-6
        assert abs(o["stability_score"] - r["stability_score"]) < 1e-6
        seg_equal(o["segmentation"], r["segmentation"])


def _eq_rle(a, b):
    assert a == b


def _eq_bin(a, b):
    assert a.dtype == b.dtype == np.bool_ and np.array_equal(a, b)


@pytest.mark.parametrize("kwargs,mode,seg_equal", [
    (dict(points_per_side=10, pred_iou_thresh=0.6, stability_score_thresh=0.7), "uncompressed_rle", _eq_rle),
    (dict(points_per_side=8, points_per_batch=13, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.5), "binary_mask", _eq_bin),
    (dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6, crop_n_layers=1,
          crop_n_points_downscale_factor=2, crop_overlap_ratio=0.25), "uncompressed_rle", _eq_rle),
], ids=["thresholds", "nms_batches", "crops"])
def test_toy_parity_with_authors_generator(kwargs, mode, seg_equal):
    img = _scene()
    ours = SamAutomaticMaskGenerator(_ToySam(), output_mode=mode, **kwargs).generate(img)
    ref = sa.SamAutomaticMaskGenerator(_AuthorsToySam(), output_mode=mode, **kwargs).generate(img)
    _compare(ours, ref, seg_equal)
    # a meaningful run: several masks of different sizes, and the filters removed some
    areas = sorted(r["area"] for r in ours)
    assert len(ours) >= 4 and areas[-1] > 3 * areas[0]
    n_candidates = sum(len(g) for g in amg.build_all_layer_point_grids(
        kwargs["points_per_side"], kwargs.get("crop_n_layers", 0), kwargs.get("crop_n_points_downscale_factor", 1))) * 3
    assert len(ours) < 0.7 * n_candidates
    if kwargs.get("crop_n_layers"):
        assert len({tuple(r["crop_box"]) for r in ours}) > 1  # masks from the crops survive


def test_toy_small_region_removal_matches_authors(monkeypatch):
    """segment-anything's small-region removal calls OpenCV's connected components; a stand-in
    built on scipy (8-connectivity, background label 0, areas in the last stats column) lets the
    authors' post-processing (holes, islands, NMS preferring unchanged masks) run beside ours."""
    from scipy import ndimage

    def connected(mask, connectivity):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)) if connectivity == 8 else None)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        stats = np.zeros((n + 1, 5), np.int32)
        stats[:, -1] = areas
        return n + 1, labels, stats, None

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(connectedComponentsWithStats=connected))
    img = _scene(seed=3)
    kw = dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.5, min_mask_region_area=40, output_mode="uncompressed_rle")
    ours = SamAutomaticMaskGenerator(_ToySam(), **kw).generate(img)
    ref = sa.SamAutomaticMaskGenerator(_AuthorsToySam(), **kw).generate(img)
    _compare(ours, ref, _eq_rle)
    plain = SamAutomaticMaskGenerator(_ToySam(), **{**kw, "min_mask_region_area": 0}).generate(img)
    assert [r["area"] for r in plain] != [r["area"] for r in ours]  # the clean-up changed something


def test_real_model_parity_with_authors_generator():
    torch.manual_seed(0)
    model = zoo.create("sam_vit_b", **get_entry("sam_vit_b").test_args).eval()
    ref_model = model.authors_reference().sam
    img = _scene(72, 100)
    kw = dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="uncompressed_rle")
    ours = SamAutomaticMaskGenerator(model, **kw).generate(img)
    ref = sa.SamAutomaticMaskGenerator(ref_model, **kw).generate(img)
    assert len(ours) == len(ref) > 10
    for o, r in zip(ours, ref):
        assert o["bbox"] == r["bbox"] and o["point_coords"] == r["point_coords"]
        # the encoders agree to ~1e-6, so a rare pixel at the threshold may flip
        assert abs(o["area"] - r["area"]) <= 2
        assert abs(o["predicted_iou"] - r["predicted_iou"]) < 1e-4
        assert abs(o["stability_score"] - r["stability_score"]) < 1e-3


# --------------------------------------------------------------------------- helpers vs authors'
@pytest.mark.parametrize("n", [1, 4, 7, 32])
def test_point_grid_and_crop_boxes(n):
    assert np.array_equal(amg.build_point_grid(n), sa_amg.build_point_grid(n))
    for layers, scale in ((0, 1), (2, 2)) if n >= 4 else ((0, 1),):
        ours = amg.build_all_layer_point_grids(n, layers, scale)
        ref = sa_amg.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(ref) and all(np.array_equal(a, b) for a, b in zip(ours, ref))
    for size in ((96, 128), (480, 311), (1, 1)):
        for layers in (0, 1, 2):
            assert amg.generate_crop_boxes(size, layers, 512 / 1500) == sa_amg.generate_crop_boxes(size, layers, 512 / 1500)


def test_rle_boxes_and_stability_match_authors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 37, 53, generator=g) * 3
    logits[0] = -1  # empty
    logits[1] = 1  # full
    masks = logits > 0
    ours, ref = amg.mask_to_rle(masks), sa_amg.mask_to_rle_pytorch(masks)
    assert ours == ref
    for rle, m in zip(ours, masks):
        back = amg.rle_to_mask(rle)
        assert np.array_equal(back, sa_amg.rle_to_mask(rle)) and np.array_equal(back, m.numpy())
        assert amg.area_from_rle(rle) == sa_amg.area_from_rle(rle) == int(m.sum())
    assert torch.equal(amg.batched_mask_to_box(masks), sa_amg.batched_mask_to_box(masks))
    boxed = torch.zeros(2, 3, 20, 30, dtype=torch.bool)
    boxed[0, 1, 4:9, 7:12] = True
    assert torch.equal(amg.batched_mask_to_box(boxed), sa_amg.batched_mask_to_box(boxed))
    assert amg.batched_mask_to_box(boxed)[0, 1].tolist() == [7, 4, 11, 8]
    for off in (0.5, 1.0):
        np.testing.assert_array_equal(amg.calculate_stability_score(logits, 0.0, off).numpy(),
                                      sa_amg.calculate_stability_score(logits, 0.0, off).numpy())
    boxes = torch.tensor([[0, 0, 10, 10], [25, 3, 40, 30], [5, 5, 49, 20]])
    crop = [30, 0, 80, 60]
    assert torch.equal(amg.is_box_near_crop_edge(boxes, crop, [0, 0, 100, 60]),
                       sa_amg.is_box_near_crop_edge(boxes, crop, [0, 0, 100, 60]))


# ------------------------------------------------------------------------------------------ RLE
# Masks and their compressed COCO RLE strings as pycocotools 2.0.11 writes them
# (``pycocotools.mask.encode(np.asfortranarray(mask))["counts"]``).
def _m_small():
    m = np.zeros((7, 9), bool)
    m[1:5, 2:7] = True
    m[6, 8] = True
    return m


def _m_hole():
    m = np.zeros((40, 50), bool)
    m[3:35, 10:45] = True
    m[10:20, 20:30] = False
    m[0, 0] = True
    return m


def _m_disk():
    yy, xx = np.mgrid[:64, :80]
    return ((yy - 30) ** 2 + (xx - 41) ** 2) < 500


PYCOCOTOOLS = [
    (_m_small, "?430000000<M", 21),
    (_m_hole, "01b<o0fC000000000000000000WO28NH28NH28NH28NH28NH28NH28NH28NH28NH28Na00000000000000000000000000000U6", 1021),
    (_m_disk, "kV17e18J4L4L4M2N2N2N2N2O0O2O0O2O0O2O00000O2O000000000001N1000001N101N101N101N2N2N2N2N3L4L4L6HYo0", 1565),
]


@pytest.mark.parametrize("make,counts,area", PYCOCOTOOLS, ids=["small", "hole", "disk"])
def test_coco_rle_matches_pycocotools(make, counts, area):
    m = make()
    rle = amg.mask_to_rle(m)[0]
    coco = amg.rle_to_coco(rle)
    assert coco == {"size": list(m.shape), "counts": counts}
    assert amg.area_from_rle(rle) == area == amg.area_from_rle(coco)
    assert np.array_equal(amg.rle_to_mask({"size": list(m.shape), "counts": counts}), m)
    assert np.array_equal(amg.rle_to_mask({"size": list(m.shape), "counts": counts.encode()}), m)
    assert amg.coco_to_rle(coco) == rle


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(1)
    for shape in ((1, 1), (1, 17), (33, 1), (64, 48), (300, 257)):
        for p in (0.0, 0.02, 0.5, 0.97, 1.0):
            m = rng.random(shape) < p
            rle = amg.mask_to_rle(torch.from_numpy(m))[0]
            assert sum(rle["counts"]) == m.size and rle["size"] == list(shape)
            assert np.array_equal(amg.rle_to_mask(rle), m)
            assert np.array_equal(amg.rle_to_mask(amg.rle_to_coco(rle)), m)
            assert np.array_equal(amg.decode_segmentation(amg.rle_to_coco(rle)), m)


def test_corrupt_rle_is_a_clear_error():
    with pytest.raises(ValueError, match="sum to H\\*W"):
        amg.rle_to_mask({"size": [4, 4], "counts": [3, 4]})
    with pytest.raises(ValueError, match="corrupt compressed RLE"):
        amg.rle_to_mask({"size": [4, 4], "counts": "0\x7f"})
    with pytest.raises(ValueError, match="'size'"):
        amg.rle_to_mask({"counts": [16]})


# ------------------------------------------------------------------------ small-region removal
def test_remove_small_regions_on_known_masks():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:6] = False  # a 2-pixel hole
    m[15, 15] = m[16, 16] = m[17, 17] = True  # a diagonal (8-connected) 3-pixel island
    m[14:19, 2:7] = True  # a 25-pixel island
    filled, changed = amg.remove_small_regions(m, 5, "holes")
    assert changed and filled[5:7, 5].all() and filled.sum() == m.sum() + 2
    cleaned, changed = amg.remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[15:18, 15:18].any() and cleaned[14:19, 2:7].all()
    assert cleaned.sum() == 100 + 25
    # 4-pixel island survives a threshold of 4; nothing to do -> unchanged, same object
    same, changed = amg.remove_small_regions(cleaned, 4, "islands")
    assert not changed and same is cleaned
    # every island small: the largest one is kept
    tiny = np.zeros((10, 10), bool)
    tiny[1, 1] = True
    tiny[5:7, 5:7] = True
    kept, changed = amg.remove_small_regions(tiny, 100, "islands")
    assert changed and kept.sum() == 4 and kept[5:7, 5:7].all()


# --------------------------------------------------------------------------------- bad input
def test_generator_argument_errors():
    toy = _ToySam()
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        SamAutomaticMaskGenerator(toy, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        SamAutomaticMaskGenerator(toy, output_mode="png")
    with pytest.raises(ValueError, match="one grid per crop layer"):
        SamAutomaticMaskGenerator(toy, points_per_side=None, point_grids=[amg.build_point_grid(4)], crop_n_layers=1)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        SamAutomaticMaskGenerator(toy, points_per_side=None, point_grids=[np.full((4, 2), 2.0)])
    gen = SamAutomaticMaskGenerator(toy, points_per_side=2)
    with pytest.raises(ValueError, match="uint8"):
        gen.generate(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        gen.generate(np.zeros((20, 20, 4), np.uint8))


def test_point_grids_and_float_images():
    toy = _ToySam()
    img = _scene(48, 64)
    grid = amg.build_point_grid(6)
    a = SamAutomaticMaskGenerator(toy, points_per_side=None, point_grids=[grid], pred_iou_thresh=0.3, stability_score_thresh=0.5).generate(img)
    b = SamAutomaticMaskGenerator(toy, points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5).generate(img)
    assert [r["bbox"] for r in a] == [r["bbox"] for r in b] and len(a) > 0
    c = SamAutomaticMaskGenerator(toy, points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5, output_mode="coco_rle")
    recs = c.generate(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert recs and all(isinstance(r["segmentation"]["counts"], str) for r in recs)
    assert all(amg.area_from_rle(r["segmentation"]) == r["area"] for r in recs)
