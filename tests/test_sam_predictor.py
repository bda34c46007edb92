"""SamPredictor: parity with segment-anything's SamPredictor (same seeded weights in the authors'
modules), batched prompts, embedding reuse, input forms and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo.tasks.segmentation.predictor import SamPredictor, preprocess_shape

import zoo
from zoo.registry import get_entry

sa = pytest.importorskip("segment_anything", reason="segment-anything (the authors' code) is a test dependency")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = zoo.create("sam_vit_b", **get_entry("sam_vit_b").test_args).eval()
    ref = model.authors_reference()
    return model, ref.sam.eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    img[h // 5 : h // 2, w // 4 : 3 * w // 4] += np.array([180, 40, 20], np.uint8)
    img[h // 2 :, : w // 3] += np.array([10, 150, 190], np.uint8)
    return img


@pytest.fixture(scope="module", params=[(90, 150), (37, 60)], ids=["downscale", "upscale"])
def pair(request, models):
    model, ref = models
    img = _image(*request.param)
    ours, theirs = SamPredictor(model), sa.SamPredictor(ref)
    ours.set_image(img)
    theirs.set_image(img)
    return ours, theirs, img


def _upstream(theirs, points=None, labels=None, box=None, mask_input=None, multimask=True):
    kw = dict(point_coords=None if points is None else np.asarray(points, np.float64),
              point_labels=None if labels is None else np.asarray(labels), box=None if box is None else np.asarray(box, np.float64),
              mask_input=mask_input, multimask_output=multimask)
    masks, scores, low = theirs.predict(**kw)
    logits, _, _ = theirs.predict(**kw, return_logits=True)
    return masks, scores, low, logits


def _assert_same(ours_out, ref_out):
    masks, scores, low = (t.cpu().numpy() for t in ours_out)
    rmasks, rscores, rlow, rlogits = ref_out
    assert masks.shape == rmasks.shape and masks.dtype == np.bool_
    # identical masks wherever the reference logit is not within float noise of the threshold
    decided = np.abs(rlogits) > 1e-4
    assert not np.any((masks != rmasks) & decided)
    assert (masks != rmasks).mean() < 1e-4
    assert 0.02 < rmasks.mean() < 0.98  # masks are not trivially empty / full
    np.testing.assert_allclose(scores, rscores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(low, rlow, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(rlow).max()))


def test_embedding_matches_authors(pair):
    ours, theirs, img = pair
    assert ours.original_size == tuple(img.shape[:2]) == tuple(theirs.original_size)
    assert ours.input_size == tuple(theirs.input_size)
    e, r = ours.get_image_embedding(), theirs.get_image_embedding()
    assert e.shape == r.shape == (1, 256, 8, 8)
    assert torch.allclose(e, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


@pytest.mark.parametrize("prompt", [
    dict(points=[[60.0, 30.0]], labels=[1]),
    dict(points=[[20.0, 15.0], [50.0, 30.0], [10.0, 33.0]], labels=[1, 0, 1]),
    dict(box=[12.0, 8.0, 55.0, 30.0]),
    dict(points=[[30.0, 20.0]], labels=[0], box=[12.0, 8.0, 55.0, 30.0]),
], ids=["point", "multi_point", "box", "box_point"])
@pytest.mark.parametrize("multimask", [True, False])
def test_parity_with_authors_predictor(pair, prompt, multimask):
    ours, theirs, img = pair
    h, w = img.shape[:2]
    # prompts are given for a 60-wide image: scale to this one
    s = np.array([w / 60.0, h / 37.0])
    points = prompt.get("points")
    points = None if points is None else (np.asarray(points) * s).tolist()
    box = prompt.get("box")
    box = None if box is None else (np.asarray(box).reshape(2, 2) * s).reshape(-1).tolist()
    labels = prompt.get("labels")
    out = ours.predict(points=points, labels=labels, boxes=box, multimask_output=multimask)
    ref = _upstream(theirs, points, labels, box, multimask=multimask)
    assert out[0].shape == (3 if multimask else 1, h, w)
    assert out[2].shape == (3 if multimask else 1, 32, 32)
    _assert_same(out, ref)


def test_parity_mask_input(pair):
    ours, theirs, img = pair
    h, w = img.shape[:2]
    pt = [[w * 0.4, h * 0.5]]
    _, scores, low = ours.predict(points=pt, labels=[1])
    prev = low[int(scores.argmax())][None]
    out = ours.predict(points=pt, labels=[1], mask_input=prev, multimask_output=False)
    ref = _upstream(theirs, pt, [1], mask_input=prev.numpy(), multimask=False)
    _assert_same(out, ref)
    # the mask prompt changes the answer (it is not ignored)
    plain = ours.predict(points=pt, labels=[1], multimask_output=False)[2]
    assert not torch.allclose(plain, out[2])


def test_batched_prompts_equal_single_ones(pair):
    ours, _, img = pair
    h, w = img.shape[:2]
    pts = np.array([[[w * 0.2, h * 0.3], [w * 0.5, h * 0.5]], [[w * 0.7, h * 0.8], [w * 0.1, h * 0.9]]])
    labels = np.array([[1, 0], [1, 1]])
    boxes = np.array([[2, 3, w * 0.6, h * 0.7], [w * 0.3, h * 0.2, w - 1, h - 1]])
    masks, scores, low = ours.predict(points=pts, labels=labels, boxes=boxes)
    assert masks.shape == (2, 3, h, w) and scores.shape == (2, 3) and low.shape == (2, 3, 32, 32)
    for i in range(2):
        m, s, lo = ours.predict(points=pts[i], labels=labels[i], boxes=boxes[i])
        assert torch.allclose(s, scores[i], atol=1e-5)
        assert torch.allclose(lo, low[i], atol=1e-4)
        assert (m != masks[i]).float().mean() < 1e-4
    # boxes alone, batched, with torch input
    bm, _, _ = ours.predict(boxes=torch.tensor(boxes))
    assert bm.shape == (2, 3, h, w)


def test_embedding_reused_across_prompts(models, monkeypatch):
    model, _ = models
    pred = SamPredictor(model)
    calls = []
    orig = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, x: calls.append(1) or orig(self, x))
    pred.set_image(_image(40, 50))
    for p in ([[5, 5]], [[20, 30]], [[45, 39]]):
        pred.predict(points=p)
    pred.predict(boxes=[1, 1, 30, 30])
    assert len(calls) == 1
    emb = pred.get_image_embedding()
    pred.set_image(_image(40, 50, seed=1))
    assert len(calls) == 2 and not torch.equal(emb, pred.get_image_embedding())


def test_input_forms_agree(models):
    model, _ = models
    img = _image(64, 80)
    a = SamPredictor(model).set_image(img)
    from PIL import Image

    b = SamPredictor(model).set_image(Image.fromarray(img))
    c = SamPredictor(model).set_image(torch.from_numpy(img).permute(2, 0, 1))  # uint8 CHW
    d = SamPredictor(model).set_image(np.ascontiguousarray(img[..., ::-1]), image_format="BGR")
    for p in (b, c, d):
        assert torch.equal(a.get_image_embedding(), p.get_image_embedding())
    # float CHW in [0, 1]: resized with antialiased bilinear interpolation, close to the PIL path
    f = SamPredictor(model).set_image(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert f.original_size == (64, 80) and f.input_size == a.input_size == preprocess_shape(64, 80, 128) == (102, 128)
    rel = (f.get_image_embedding() - a.get_image_embedding()).norm() / a.get_image_embedding().norm()
    assert rel < 0.05


def test_reset_image(models):
    model, _ = models
    pred = SamPredictor(model).set_image(_image(30, 30))
    assert pred.is_image_set
    pred.reset_image()
    assert not pred.is_image_set
    with pytest.raises(ValueError, match="set_image"):
        pred.predict(points=[[1, 1]])


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def ready(models):
    return SamPredictor(models[0]).set_image(_image(40, 60))


def test_predict_before_set_image(models):
    pred = SamPredictor(models[0])
    with pytest.raises(ValueError, match=r"no image set: call set_image"):
        pred.predict(points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match=r"set_image"):
        pred.get_image_embedding()


def test_no_prompt(ready):
    with pytest.raises(ValueError, match="no prompt"):
        ready.predict()
    with pytest.raises(ValueError, match="labels given without points"):
        ready.predict(labels=[1])


@pytest.mark.parametrize("pt", [[-1, 5], [61, 5], [5, 40.5], [1e6, 1e6]])
def test_point_outside_image(ready, pt):
    with pytest.raises(ValueError, match=r"outside the image \(width 60, height 40\)"):
        ready.predict(points=[[10, 10], pt], labels=[1, 1])


def test_points_on_the_border_and_padding_points_are_fine(ready):
    m, _, _ = ready.predict(points=[[0, 0], [60, 40], [-5, -5]], labels=[1, 1, -1])
    assert m.shape == (3, 40, 60)


@pytest.mark.parametrize("box,msg", [
    ([30, 5, 10, 20], r"x1 < x0"),
    ([5, 30, 20, 10], r"y1 < y0"),
    ([70, 50, 90, 60], r"outside the image"),
    ([1, 2, 3], r"boxes must be \(4,\)"),
    ([1, 2, float("nan"), 4], r"NaN"),
])
def test_bad_box(ready, box, msg):
    with pytest.raises(ValueError, match=msg):
        ready.predict(boxes=box)


def test_bad_points_and_labels(ready):
    with pytest.raises(ValueError, match=r"one per point"):
        ready.predict(points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match=r"labels must be 1 \(foreground\)"):
        ready.predict(points=[[1, 1]], labels=[7])
    with pytest.raises(ValueError, match=r"points must be \(N, 2\)"):
        ready.predict(points=[[1, 1, 1]])
    with pytest.raises(ValueError, match=r"batch size"):
        ready.predict(points=[[[1, 1]], [[2, 2]]], boxes=[[0, 0, 5, 5], [0, 0, 5, 5], [0, 0, 5, 5]])
    with pytest.raises(ValueError, match=r"mask_input must be"):
        ready.predict(points=[[1, 1]], mask_input=np.zeros((1, 64, 64), np.float32))


@pytest.mark.parametrize("image,msg", [
    (np.zeros((20, 30, 3), np.float64), r"uint8"),
    (np.zeros((20, 30, 3), np.int32), r"uint8"),
    (np.zeros((20, 30, 4), np.uint8), r"expected 3 channels"),
    (np.zeros((20, 30), np.uint8), r"3 channels"),
    (torch.zeros(1, 20, 30), r"expected 3 channels"),
    (torch.zeros(3, 20, 30, dtype=torch.int64), r"floating-point"),
    (torch.full((3, 20, 30), 2.0), r"expected values in \[0, 1\]"),
    (torch.zeros(2, 3, 20, 30), r"one image"),
    ("image.png", r"PIL image"),
])
def test_bad_image(models, image, msg):
    pred = SamPredictor(models[0])
    with pytest.raises(ValueError, match=msg):
        pred.set_image(image)
    assert not pred.is_image_set


def test_not_a_sam_model():
    with pytest.raises(ValueError, match="SAM-family model"):
        SamPredictor(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_mobile_sam_parity_with_mobile_sam_predictor():
    """MobileSAM at its real 1024 input: our predictor on mobile_sam_vit_t against the MobileSAM
    authors' SamPredictor (``mobile_sam`` package) holding the same weights."""
    ms = pytest.importorskip("mobile_sam", reason="mobilesam-mirror (the MobileSAM authors' code) is a test dependency")
    torch.manual_seed(0)
    model = zoo.create("mobile_sam_vit_t").eval()
    ref = model.authors_reference().sam.eval()
    img = _image(150, 200, seed=2)
    ours, theirs = SamPredictor(model).set_image(img), ms.SamPredictor(ref)
    theirs.set_image(img)
    e, r = ours.get_image_embedding(), theirs.get_image_embedding()
    assert torch.allclose(e, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))
    for prompt in (dict(points=[[60.0, 40.0]], labels=[1]), dict(points=[[60.0, 40.0]], labels=[0], box=[20.0, 10.0, 150.0, 120.0])):
        out = ours.predict(points=prompt["points"], labels=prompt["labels"], boxes=prompt.get("box"))
        _assert_same(out, _upstream(theirs, prompt["points"], prompt["labels"], prompt.get("box")))
