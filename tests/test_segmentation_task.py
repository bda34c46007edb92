"""`zoo train segmentation` distils a SAM image encoder from a teacher's cached embeddings (the
loss falls; the teacher runs once per image, later runs read the cache); `zoo eval segmentation`
scores one-point / multi-point / box prompts and the agreement with a teacher, with numbers
checked against hand-computed geometry and a direct predictor computation; the readers decode
COCO (RLE, polygons), per-instance PNG masks and SA-1B files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate
from zoo.tasks.base import TaskConfigError

import zoo
from zoo.hub import save_safetensors

S = 128  # the encoders' input side in these tests
TEACHER_ARGS = dict(img_size=S, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
STUDENT_ARGS = dict(img_size=S, embed_dims=[16, 32, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models: one thread avoids OpenMP's spinning on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from zoo.tasks.segmentation.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=6, seed=0)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A small random SAM ViT-B teacher saved as a zoo weight file (the same weights every load)."""
    torch.manual_seed(1)
    t = zoo.create("sam_vit_b", **TEACHER_ARGS)
    return str(save_safetensors(t.state_dict(), tmp_path_factory.mktemp("teacher") / "teacher.safetensors"))


# Rectangles (rows r0..r1, cols c0..c1, inclusive) on two images, in both PNG layouts.
RECTS = {
    "a": ((64, 96), [(10, 29, 10, 49), (40, 55, 60, 71)]),  # per-instance files masks/a/00k.png
    "b": ((64, 64), [(5, 14, 5, 24), (30, 49, 20, 35)]),  # a label map masks/b.png
}


def _rect_mask(hw, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(hw, dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


@pytest.fixture(scope="module")
def rects(tmp_path_factory):
    root = tmp_path_factory.mktemp("rects")
    (root / "images").mkdir()
    (root / "masks" / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (hw, boxes) in RECTS.items():
        img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        label = np.zeros(hw, dtype=np.uint8)
        for k, box in enumerate(boxes):
            m = _rect_mask(hw, *box)
            img[m] = (40 * (k + 1), 200, 255 - 60 * k)
            label[m] = k + 1
            if name == "a":
                Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / "a" / f"{k:03d}.png")
        Image.fromarray(img).save(root / "images" / f"{name}.png")
        if name == "b":
            Image.fromarray(label).save(root / "masks" / "b.png")
    return root


def _vit_forward_counter(monkeypatch) -> list[int]:
    """Counts the images (``[0]``) and the calls (``[1]``) of SAM's ViT image encoder (the teacher;
    the student is a TinyViT)."""
    from zoo.models.sam_encoders import ImageEncoderViT

    seen = [0, 0]
    original = ImageEncoderViT.forward

    def counted(self, x):
        seen[0] += x.shape[0]
        seen[1] += 1
        return original(self, x)

    monkeypatch.setattr(ImageEncoderViT, "forward", counted)
    return seen


# ------------------------------------------------------------------------------ metrics / prompts


def test_iou_and_prompts_on_known_geometry():
    from zoo.tasks.segmentation.evaluate import (
        center_points,
        instance_prompts,
        mask_box,
    )
    from zoo.tasks.segmentation.metrics import mask_iou, mean_iou, pairwise_mask_iou

    hw = (40, 80)
    a = _rect_mask(hw, 10, 29, 10, 49)  # 20 x 40
    b = _rect_mask(hw, 10, 29, 30, 69)  # shifted right by half its width: 20 x 20 overlap
    assert float(mask_iou(a, a)) == 1.0
    assert float(mask_iou(a, b)) == pytest.approx(400 / (800 + 800 - 400), abs=1e-12)
    assert float(mask_iou(a, np.zeros(hw, bool))) == 0.0
    assert float(mask_iou(np.zeros(hw, bool), np.zeros(hw, bool))) == 1.0  # both empty: they agree
    np.testing.assert_allclose(pairwise_mask_iou(np.stack([a, b]), np.stack([a, b])).numpy(), [[1, 1 / 3], [1 / 3, 1]])
    assert mean_iou([1.0, 0.5]) == 0.75 and math.isnan(mean_iou([]))
    with pytest.raises(ValueError, match="sizes differ"):
        mask_iou(a, a[:, :10])
    # distance to the outside: min(r - 9, 30 - r, c - 9, 50 - c), largest (10) first at row 19, col 19
    np.testing.assert_array_equal(center_points(a, 1), [[19.0, 19.0]])
    pts = center_points(a, 3)
    assert all(a[int(y), int(x)] for x, y in pts) and len({tuple(p) for p in pts.tolist()}) == 3
    # inside an axis-aligned rectangle the distance to the outside is min(r - 9, 30 - r, c - 9, 50 - c);
    # the second point maximises min(that, distance to (19, 19)): 10 is the most it can be (rows 19-20
    # only reach 10), first met in row-major order at row 19, column 29 (10 pixels right of the first)
    assert tuple(pts[1]) == (29.0, 19.0)
    np.testing.assert_array_equal(mask_box(a), [10, 10, 49, 29])  # x0, y0, x1, y1, last column / row included
    p = instance_prompts(np.stack([a, b]), num_points=2)
    assert p["point"].shape == (2, 1, 2) and p["points"].shape == (2, 2, 2) and p["box"].shape == (2, 4)


# ------------------------------------------------------------------------------------- readers


def test_readers_coco_rle_polygons_png_and_sa1b(shapes, rects, tmp_path):
    from zoo.tasks.segmentation.data import read_instance_dataset, rle_encode

    # COCO compressed RLE by hand: a 4x3 mask with rows 1-3 of column 1 and rows 2-3 of column 2 set
    # -> column-major runs [5, 3, 2, 2] -> '5', '3', '2' (chr(48 + n)), then the fourth as the difference
    # to the second, 2 - 3 = -1: 5-bit group 31 with the sign bit set -> chr(48 + 31) = 'O'
    m = np.zeros((4, 3), dtype=bool)
    m[1:, 1] = True
    m[2:, 2] = True
    assert rle_encode(m) == {"size": [4, 3], "counts": "532O"}

    # the generated dataset's COCO file holds the same masks as its PNG files
    samples = read_instance_dataset(shapes)
    assert len(samples) == 6
    coco = json.loads((shapes / "annotations.json").read_text())
    assert sum(len(s.load_masks()) for s in samples) == len(coco["annotations"])
    for s in samples:
        stem = s.name.rsplit(".", 1)[0]
        pngs = sorted((shapes / "masks" / stem).glob("*.png"))
        ref = np.stack([np.asarray(Image.open(p)) > 0 for p in pngs])
        np.testing.assert_array_equal(s.load_masks(), ref)
        assert s.load_image().shape[:2] == ref.shape[1:]
        assert (ref.sum(0) <= 1).all()  # visible parts never overlap

    # per-instance PNG files and a label map
    by_name = {s.name: s for s in read_instance_dataset(rects)}
    for name, (hw, boxes) in RECTS.items():
        np.testing.assert_array_equal(by_name[f"{name}.png"].load_masks(), np.stack([_rect_mask(hw, *b) for b in boxes]))

    # hand-written COCO: a polygon, an uncompressed RLE, a compressed RLE and a crowd region (skipped)
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "images" / "x.png")
    unc = {"size": [40, 60], "counts": [5, 3, 40 * 60 - 8]}  # column 0, rows 5-7
    anns = [
        {"id": 1, "image_id": 7, "segmentation": [[10, 10, 49, 10, 49, 29, 10, 29]], "iscrowd": 0},
        {"id": 2, "image_id": 7, "segmentation": unc, "iscrowd": 0},
        {"id": 3, "image_id": 7, "segmentation": rle_encode(_rect_mask((40, 60), 1, 2, 3, 4)), "iscrowd": 0},
        {"id": 4, "image_id": 7, "segmentation": unc, "iscrowd": 1},
    ]
    (root / "annotations.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "x.png", "height": 40, "width": 60}],
                                                       "annotations": anns}))
    (s,) = read_instance_dataset(root)
    masks = s.load_masks()
    assert s.ids == [1, 2, 3]
    np.testing.assert_array_equal(masks[0], _rect_mask((40, 60), 10, 29, 10, 49))  # PIL fills the outline too
    np.testing.assert_array_equal(masks[1], _rect_mask((40, 60), 5, 7, 0, 0))
    np.testing.assert_array_equal(masks[2], _rect_mask((40, 60), 1, 2, 3, 4))

    # SA-1B: NAME.png beside NAME.json
    sa = tmp_path / "sa1b"
    sa.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(sa / "sa_1.png")
    sa_mask = _rect_mask((20, 30), 2, 5, 7, 9)
    (sa / "sa_1.json").write_text(json.dumps({"image": {"height": 20, "width": 30, "file_name": "sa_1.png"},
                                              "annotations": [{"id": 0, "segmentation": rle_encode(sa_mask)}]}))
    (s,) = read_instance_dataset(sa)
    np.testing.assert_array_equal(s.load_masks(), sa_mask[None])

    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskConfigError, match="no annotated images"):
        read_instance_dataset(tmp_path / "empty")


# ---------------------------------------------------------------------------------- evaluation


class StubPredictor:
    """Answers each prompt with the reference mask of the instance it names (the mask holding
    the first point, or whose box it is), passed through ``transform``; for multimask output the
    candidates are [transform(mask), mask, empty] with scores [0.9, 0.5, 0.1]."""

    def __init__(self, root, transform):
        from zoo.tasks.segmentation.data import read_instance_dataset

        self.by_image = {s.load_image().tobytes(): s.load_masks() for s in read_instance_dataset(root)}
        self.transform = transform

    def set_image(self, image):
        self.masks = self.by_image[np.ascontiguousarray(image).tobytes()]

    def predict(self, points=None, labels=None, boxes=None, multimask_output=True):
        from zoo.tasks.segmentation.evaluate import mask_box

        if points is not None:
            ids = [next(i for i, m in enumerate(self.masks) if m[int(p[0, 1]), int(p[0, 0])]) for p in np.asarray(points)]
        else:
            ids = [next(i for i, m in enumerate(self.masks) if (mask_box(m) == b).all()) for b in np.asarray(boxes)]
        out, scores = [], []
        for i in ids:
            m = self.masks[i]
            cands = [self.transform(m), m, np.zeros_like(m)] if multimask_output else [self.transform(m)]
            out.append(np.stack(cands))
            scores.append([0.9, 0.5, 0.1][: len(cands)])
        return torch.from_numpy(np.stack(out)), torch.tensor(scores), None


def _shift_half_width(m: np.ndarray) -> np.ndarray:
    cols = np.nonzero(m.any(0))[0]
    return np.roll(m, (cols[-1] - cols[0] + 1) // 2, axis=1)


def test_eval_numbers_on_known_masks(rects):
    from zoo.tasks.segmentation.evaluate import evaluate_segmentation

    perfect = StubPredictor(rects, lambda m: m)
    res = evaluate_segmentation(perfect, str(rects), teacher=StubPredictor(rects, lambda m: m))
    assert res["num_images"] == 2 and res["instances"] == 4 and res["num_points"] == 3
    for key in ("miou_point", "miou_point_oracle", "miou_points", "miou_box", "agreement_point", "agreement_points",
                "agreement_box", "teacher_miou_box"):
        assert res[key] == 1.0, key

    # every prediction shifted right by half the rectangle's width: IoU = (w/2 * h) / (2 w h - w/2 * h)
    expected = []
    for hw, boxes in RECTS.values():
        for r0, r1, c0, c1 in boxes:
            h, w = r1 - r0 + 1, c1 - c0 + 1
            inter = (w - w // 2) * h
            expected.append(inter / (2 * w * h - inter))
    assert expected == [1 / 3] * 4  # even widths
    shifted = StubPredictor(rects, _shift_half_width)
    res = evaluate_segmentation(shifted, str(rects), teacher=perfect, num_points=2)
    assert res["miou_point"] == pytest.approx(np.mean(expected), abs=1e-12)  # the most confident candidate
    assert res["miou_point_oracle"] == 1.0  # the best candidate is the reference itself
    assert res["miou_points"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert res["miou_box"] == pytest.approx(np.mean(expected), abs=1e-12)
    for k in ("point", "points", "box"):  # the teacher (perfect) agrees with the model as the reference does
        assert res[f"agreement_{k}"] == pytest.approx(np.mean(expected), abs=1e-12)
        assert res[f"teacher_miou_{k}"] == 1.0
    row = {r["image"]: r for r in res["per_image"]}["a.png"]
    assert row["instances"] == 2 and row["miou_box"] == pytest.approx(1 / 3, abs=1e-12)
    res = evaluate_segmentation(shifted, str(rects), max_images=1, max_instances=1)
    assert res["num_images"] == 1 and res["instances"] == 1
    with pytest.raises(ValueError, match="num_points"):
        evaluate_segmentation(perfect, str(rects), num_points=0)


def test_eval_real_model_equals_direct_predictor(rects):
    from zoo.tasks.segmentation.evaluate import evaluate_segmentation
    from zoo.tasks.segmentation.predictor import SamPredictor

    torch.manual_seed(0)
    model = zoo.create("mobile_sam_vit_t", **STUDENT_ARGS).eval()
    res = evaluate_segmentation(model, str(rects), num_points=2)
    for key in ("miou_point", "miou_point_oracle", "miou_points", "miou_box"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["miou_point_oracle"] >= res["miou_point"]
    # image a's box prompts by hand through the predictor, IoU by numpy
    hw, boxes = RECTS["a"]
    pred = SamPredictor(model)
    pred.set_image(np.asarray(Image.open(rects / "images" / "a.png")))
    ious = []
    for r0, r1, c0, c1 in boxes:
        masks, _, _ = pred.predict(boxes=[c0, r0, c1, r1], multimask_output=False)
        m, gt = masks[0].numpy(), _rect_mask(hw, r0, r1, c0, c1)
        ious.append((m & gt).sum() / (m | gt).sum())
    row = {r["image"]: r for r in res["per_image"]}["a.png"]
    assert row["miou_box"] == pytest.approx(float(np.mean(ious)), abs=1e-12)


# ---------------------------------------------------------------------------------- training


def test_distillation_lowers_the_loss_and_caches_the_teacher(shapes, teacher_file, tmp_path, monkeypatch):
    from zoo.tasks.segmentation.data import SamImageDataset
    from zoo.tasks.segmentation.module import SamDistillModule

    calls = _vit_forward_counter(monkeypatch)
    kw = dict(model_args=STUDENT_ARGS, teacher="sam_vit_b", teacher_args=TEACHER_ARGS, teacher_checkpoint=teacher_file,
              cache_dir=str(tmp_path / "cache"), lr=3e-3, scheduler="constant")
    torch.manual_seed(0)
    module = SamDistillModule("mobile_sam_vit_t", **kw)
    assert not any(k.startswith("teacher") for k in module.state_dict())
    module.copy_teacher_decoder()  # MobileSAM keeps SAM's prompt encoder and mask decoder
    for part in ("prompt_encoder", "mask_decoder"):
        t_sd = getattr(module.teacher_net, part).state_dict()
        assert all(torch.equal(v, t_sd[k]) for k, v in getattr(module.net, part).state_dict().items())
    opt = module.configure_optimizers()
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in module.net.image_encoder.parameters())
    decoder_before = {k: v.clone() for k, v in module.net.mask_decoder.state_dict().items()}

    ds = SamImageDataset(shapes / "images", S)
    batch = default_collate([ds[i] for i in range(4)])
    # the student sees SAM's preprocessing: the same embedding as Sam.forward on the unpadded image
    h, w = batch["size"][1].tolist()
    module.eval()  # batch-norm statistics: the same for a batch and one image
    with torch.no_grad():
        direct = module.net(batch["image"][1:2, :, :h, :w].float() / 255)
        torch.testing.assert_close(module.student_embeddings(batch)[1:2], direct, rtol=0, atol=1e-5)
    module.train()
    assert calls[0] == 0

    losses = []
    for _ in range(15):
        loss = module.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses
    assert calls[0] == 4  # the teacher saw each image once, in the first step
    files = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 4 and files[0].parent.parent.name.startswith("sam_vit_b-")
    assert all(torch.equal(v, module.net.mask_decoder.state_dict()[k]) for k, v in decoder_before.items())
    with torch.no_grad():  # the cache holds the teacher's embeddings (float16)
        fresh = module.run_teacher(batch["image"], batch["size"])
    cached = module.teacher_embeddings(batch)
    torch.testing.assert_close(cached, fresh.half().float(), rtol=0, atol=0)

    # a new module with the same teacher weights reads the cache: the teacher never runs
    calls[0] = 0
    again = SamDistillModule("mobile_sam_vit_t", **kw)
    assert torch.equal(again.teacher_embeddings(batch), cached) and calls[0] == 0
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert again.precompute_embeddings(ds) == 2 and calls[0] == 2  # only the two images not seen yet
    assert [f.stat().st_mtime_ns for f in files] == mtimes

    # other teacher weights: another cache folder
    other = SamDistillModule("mobile_sam_vit_t", **{**kw, "teacher_checkpoint": None})
    assert other.cache.root != again.cache.root and other.cache.root.parent == again.cache.root.parent


def test_pairing_errors(teacher_file):
    from zoo.tasks.segmentation.module import SamDistillModule

    from zoo.registry import UnknownModelError

    with pytest.raises(UnknownModelError, match="unknown model"):
        SamDistillModule("mobile_sam_vit_t", model_args=STUDENT_ARGS, teacher="sam_vit_q")
    with pytest.raises(TaskConfigError, match="not a segmentation"):
        SamDistillModule("mobile_sam_vit_t", model_args=STUDENT_ARGS, teacher="rlfn_x4")
    m = SamDistillModule("mobile_sam_vit_t", model_args=STUDENT_ARGS, teacher="sam_vit_b",
                         teacher_args={**TEACHER_ARGS, "img_size": 2 * S})
    with pytest.raises(TaskConfigError, match="img_size"):
        m.cache  # noqa: B018 - builds the teacher
    with pytest.raises(TaskConfigError, match="cache_dtype"):
        SamDistillModule("mobile_sam_vit_t", model_args=STUDENT_ARGS, teacher="sam_vit_b", cache_dtype="int8")


@pytest.mark.slow
def test_train_cli_reuses_the_cache_then_eval_cli(shapes, teacher_file, tmp_path, monkeypatch, capsys):
    from zoo.tasks.cli import train_main

    from zoo.cli import main as zoo_main

    calls = _vit_forward_counter(monkeypatch)
    cache = tmp_path / "cache"

    def train(root, *extra):
        return train_main("segmentation", [
            "-c", "segmentation/mobile_sam_distill.yaml", f"--model.model_args={json.dumps(STUDENT_ARGS)}",
            "--model.teacher=sam_vit_b", f"--model.teacher_args={json.dumps(TEACHER_ARGS)}",
            f"--model.teacher_checkpoint={teacher_file}", f"--model.cache_dir={cache}", "--model.warmup_steps=1",
            f"--data.train_dir={shapes / 'images'}", f"--data.val_dir={shapes / 'images'}", f"--data.img_size={S}",
            "--data.batch_size=2", "--data.num_workers=0", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={root}", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.callbacks=null", *extra,
        ])

    assert train(tmp_path / "run1") == 0
    files = sorted(cache.rglob("*.safetensors"))
    # precomputed before the first step, once per image (train and val share them), 4 + 2 per call
    assert len(files) == 6 and calls == [6, 2]
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert train(tmp_path / "run2") == 0
    assert calls == [6, 2] and [f.stat().st_mtime_ns for f in sorted(cache.rglob("*.safetensors"))] == mtimes

    ckpt_path = sorted((tmp_path / "run2").rglob("*.ckpt"))[-1]
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["zoo_data_cfg"]["sam_teacher"]["name"] == "sam_vit_b"
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])
    capsys.readouterr()

    rc = zoo_main(["eval", "segmentation", "--model", "mobile_sam_vit_t", "--checkpoint", str(ckpt_path), "--data", str(shapes),
                   "--teacher", "sam_vit_b", "--teacher-checkpoint", teacher_file, "--teacher-args", json.dumps(TEACHER_ARGS),
                   "--max-images", "2", "--num-points", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["num_images"] == 2 and res["teacher"] == "sam_vit_b" and res["num_points"] == 2
    for key in ("miou_point", "miou_points", "miou_box", "agreement_point", "agreement_points", "agreement_box", "teacher_miou_box"):
        assert res[key] is not None and 0.0 <= res[key] <= 1.0, key

    # errors: data / student size mismatch, a folder without annotations
    assert train(tmp_path / "run3", f"--data.img_size={2 * S}") == 2
    assert "img_size" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert zoo_main(["eval", "segmentation", "--model", "mobile_sam_vit_t", "--data", str(tmp_path / "plain")]) == 2
    assert "no annotated images" in capsys.readouterr().err
