"""ONNX export of the prompt encoder + mask decoder (SAM's standard decoder graph): onnxruntime
against PyTorch for 1, 3 and 5 points, against segment-anything's own ``SamOnnxModel`` on the
authors' modules, and against the predictor's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo.tasks.segmentation.onnx import (
    ONNX_INPUT_NAMES,
    ONNX_OUTPUT_NAMES,
    SamOnnxDecoder,
    decoder_example_inputs,
    export_sam_decoder,
)
from zoo.tasks.segmentation.predictor import SamPredictor

import zoo
from zoo.registry import get_entry

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.create("sam_vit_b", **get_entry("sam_vit_b").test_args).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "sub" / "decoder.onnx"
    info = export_sam_decoder(model, path, opset=17)
    return path, info, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, inp):
    return [torch.from_numpy(o) for o in sess.run(list(ONNX_OUTPUT_NAMES), {k: inp[k].numpy() for k in ONNX_INPUT_NAMES})]


def test_export_report_and_graph(exported):
    path, info, sess = exported
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert info["opset"] == 17 and info["inputs"] == list(ONNX_INPUT_NAMES) and info["outputs"] == list(ONNX_OUTPUT_NAMES)
    assert sorted(info["max_abs_err"]) == [1, 3, 5]
    for n, errs in info["max_abs_err"].items():
        assert set(errs) == set(ONNX_OUTPUT_NAMES)
        assert max(errs.values()) < 1e-4, (n, errs)
    assert [i.name for i in sess.get_inputs()] == list(ONNX_INPUT_NAMES)
    dims = {i.name: i.shape for i in sess.get_inputs()}
    assert isinstance(dims["point_coords"][1], str) and isinstance(dims["point_labels"][1], str)  # dynamic N


@pytest.mark.parametrize("n_points,has_mask", [(1, False), (3, True), (5, False), (8, True)])
def test_onnxruntime_matches_pytorch(model, exported, n_points, has_mask):
    _, _, sess = exported
    dec = SamOnnxDecoder(model).eval()
    inp = decoder_example_inputs(model, n_points, orig_size=(75, 110), has_mask=has_mask, seed=10 + n_points)
    with torch.no_grad():
        ref = dec(*(inp[k] for k in ONNX_INPUT_NAMES))
    got = _run(sess, inp)
    assert got[0].shape == (1, 4, 75, 110) and got[1].shape == (1, 4) and got[2].shape == (1, 4, 32, 32)
    for r, g in zip(ref, got):
        err = (r - g).abs().max().item()
        assert err < 1e-4 * max(1.0, r.abs().max().item()), err


def test_matches_authors_onnx_model(model, exported):
    """segment-anything's SamOnnxModel (the graph its export script writes) on the authors' modules."""
    sa_onnx = pytest.importorskip("segment_anything.utils.onnx")
    ref_sam = model.authors_reference().sam.eval()
    _, _, sess = exported
    for n, size, has_mask in ((1, (60, 90), False), (4, (128, 40), True)):
        inp = decoder_example_inputs(model, n, orig_size=size, has_mask=has_mask, seed=n)
        args = [inp[k] for k in ONNX_INPUT_NAMES]
        with torch.no_grad():
            theirs = sa_onnx.SamOnnxModel(ref_sam, return_single_mask=False)(*args)
            ours_single = SamOnnxDecoder(model, return_single_mask=True)(*args)
            theirs_single = sa_onnx.SamOnnxModel(ref_sam, return_single_mask=True)(*args)
        got = _run(sess, inp)
        for r, g in zip(theirs, got):
            assert r.shape == g.shape
            assert (r - g).abs().max().item() < 1e-4 * max(1.0, r.abs().max().item())
        for r, g in zip(theirs_single, ours_single):
            assert r.shape == g.shape and r.shape[1] == 1
            assert (r - g).abs().max().item() < 1e-4 * max(1.0, r.abs().max().item())


def test_matches_predictor(model, exported):
    """The decoder inputs as SAM's ONNX users build them (transformed coordinates, a (0, 0) padding
    point with label -1 when there is no box, a box as labels 2 and 3) give the predictor's logits."""
    _, _, sess = exported
    rng = np.random.default_rng(0)
    img = (rng.random((70, 100, 3)) * 255).astype(np.uint8)
    pred = SamPredictor(model).set_image(img)
    emb = pred.get_image_embedding()
    size = torch.tensor([70.0, 100.0])
    no_mask = dict(mask_input=torch.zeros(1, 1, 32, 32), has_mask_input=torch.zeros(1))

    pts = np.array([[30.0, 20.0], [70.0, 50.0]])
    coords = torch.cat([pred.transform_coords(torch.from_numpy(pts)), torch.zeros(1, 2)])[None]
    inp = dict(image_embeddings=emb, point_coords=coords, point_labels=torch.tensor([[1.0, 0.0, -1.0]]), orig_im_size=size, **no_mask)
    masks, iou, low = _run(sess, inp)
    ref_m, ref_s, ref_low = pred.predict(points=pts, labels=[1, 0], multimask_output=True, return_logits=True)
    one_m, one_s, _ = pred.predict(points=pts, labels=[1, 0], multimask_output=False, return_logits=True)
    tol = 1e-4 * max(1.0, ref_m.abs().max().item())
    assert (masks[0, 1:] - ref_m).abs().max() < tol and (masks[0, :1] - one_m).abs().max() < tol
    assert torch.allclose(iou[0, 1:], ref_s, atol=1e-5) and torch.allclose(iou[0, :1], one_s, atol=1e-5)
    assert (low[0, 1:] - ref_low).abs().max() < tol

    box = np.array([10.0, 5.0, 80.0, 60.0])
    corners = pred.transform_boxes(torch.from_numpy(box)[None]).reshape(1, 2, 2)
    inp = dict(image_embeddings=emb, point_coords=corners, point_labels=torch.tensor([[2.0, 3.0]]), orig_im_size=size, **no_mask)
    masks, iou, _ = _run(sess, inp)
    ref_m, ref_s, _ = pred.predict(boxes=box, multimask_output=True, return_logits=True)
    assert (masks[0, 1:] - ref_m).abs().max() < 1e-4 * max(1.0, ref_m.abs().max().item())
    assert torch.allclose(iou[0, 1:], ref_s, atol=1e-5)


def test_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    target = tmp_path / "dec.onnx"
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_sam_decoder(model, target)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="SAM-family model"):
        export_sam_decoder(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_sam_decoder(model, tmp_path / "x.onnx", opset=9)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_single_mask_export(model, tmp_path):
    info = export_sam_decoder(model, tmp_path / "single.onnx", return_single_mask=True, check_points=(1, 2, 3, 5))
    for n, errs in info["max_abs_err"].items():
        assert max(errs.values()) < 1e-4, (n, errs)
    sess = ort.InferenceSession(str(tmp_path / "single.onnx"), providers=["CPUExecutionProvider"])
    out = _run(sess, decoder_example_inputs(model, 3))
    assert out[0].shape[1] == out[1].shape[1] == out[2].shape[1] == 1
