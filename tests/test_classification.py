"""The image-classification task: data (ImageFolder layouts, CIFAR errors, timm transforms),
`zoo train classification` (learning, resume, DDP, mixup, fine-tuning modes), `zoo eval
classification` (against a direct computation), the learning-rate schedules against timm's
schedulers, and the shipped recipes (configs/classification/*.yaml)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import zoo
from zoo.cli import main as zoo_main
from zoo.tasks.base import TASKS, TaskConfigError
from zoo.tasks.classification.data import (
    ClassificationDataModule,
    build_eval_transform,
    open_cifar,
    resolve_eval_data_cfg,
    split_per_class,
)
from zoo.tasks.classification.evaluate import evaluate_classification
from zoo.tasks.classification.metrics import topk_correct
from zoo.tasks.classification.module import ClassificationModule, lr_factor_fn
from zoo.tasks.cli import eval_main, train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "classification"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
MODEL = "mobilenetv2_100"
SIZE = 32  # px: small enough for fast CPU steps, MobileNetV2 still works (1x1 final map)

COLOURS = {"blue": (50, 70, 190), "red": (190, 60, 50)}


def _make_images(folder: Path, n: int, rng: np.random.Generator) -> None:
    """``n`` textured images per class: a brightness-jittered base colour plus grey and colour noise."""
    for name, base in COLOURS.items():
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = int(rng.integers(36, 49))
            tex = rng.normal(0, 35, (s, s, 1)) + rng.normal(0, 15, (s, s, 3))
            img = np.clip(np.array(base) * rng.uniform(0.6, 1.3) + tex, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``train/{blue,red}`` (20 each) and ``val/{blue,red}`` (10 each)."""
    root = tmp_path_factory.mktemp("cls_data")
    rng = np.random.default_rng(0)
    _make_images(root / "train", 20, rng)
    _make_images(root / "val", 10, rng)
    return root


def _config(tmp: Path, ema: bool = False) -> Path:
    """The shipped MobileNetV2 recipe, with its checkpoints in ``tmp`` and (by default) no EMA:
    an EMA of decay 0.9999 barely moves in the few steps of a test."""
    cfg = yaml.safe_load((CONFIG_DIR / f"{MODEL}.yaml").read_text())
    callbacks = []
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("EMAWeightAveraging") and not ema:
            continue
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["dirpath"] = str(tmp / "checkpoints")
        if cb["class_path"].endswith("LearningRateMonitor"):
            cb["init_args"]["logging_interval"] = "step"
        callbacks.append(cb)
    cfg["trainer"]["callbacks"] = callbacks
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A 1000-class MobileNetV2 weight file, standing in for the ImageNet weights (no network here)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cls_weights") / f"{MODEL}.safetensors"
    save_file(zoo.create(MODEL).state_dict(), path)
    return path


def _args(data: Path, weights: Path, tmp: Path, steps: int, ema: bool = False) -> list[str]:
    """Fine-tune the weight file: a new 2-class head, trained alone (a linear probe: from random
    features, what a few CPU steps can teach reliably), AdamW with warm-up and cosine."""
    return [
        "-c", str(_config(tmp, ema)),
        f"--data.data_dir={data}", f"--data.image_size={SIZE}", "--data.batch_size=8", "--data.num_workers=0",
        "--data.color_jitter=0",
        "--model.model_args={num_classes: 2}", f"--model.checkpoint_path={weights}", "--model.finetune=linear",
        "--model.optimizer=adamw", "--model.lr=0.01", "--model.lr_base_batch=null",
        "--model.weight_decay=0.01", "--model.scheduler=cosine", "--model.sched_interval=step", "--model.warmup_epochs=0.4",
        "--model.warmup_lr=0.001", "--model.min_lr=0.001",
        f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", "--trainer.precision=32-true",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip


def _rows(version_dir: Path) -> list[dict]:
    with open(version_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(data, weights, tmp_path_factory) -> dict:
    """30 steps (6 epochs of 40 images / 8) of `zoo train classification`, validated every epoch."""
    out = tmp_path_factory.mktemp("cls_run")
    assert train_main("classification", _args(data, weights, out, 30)) == 0
    (version,) = sorted((out / "logs").glob("version_*"))
    return {"out": out, "dir": version, "ckpt": out / "checkpoints" / "last.ckpt"}


# ------------------------------------------------------------------------------ training


def test_training_learns_and_checkpoint_records_preprocessing(trained, data, weights):
    rows = _rows(trained["dir"])
    top1 = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    top5 = [float(r["val/top5"]) for r in rows if r.get("val/top5")]
    assert len(top1) == 6  # one validation per epoch
    assert top1[-1] >= 0.9, top1  # 20 validation images, chance is 0.5
    assert top5 == [1.0] * 6  # two classes: top-5 counts both
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    # the weights before training: the same file under a fresh head
    torch.manual_seed(0)
    fresh = ClassificationModule(MODEL, {"num_classes": 2}, checkpoint_path=str(weights)).net
    before = evaluate_classification(fresh, data / "val", image_size=SIZE)
    val_loss = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val_loss[-1] < 0.5 * before["loss"], (before, val_loss)
    # the warm-up and cosine of the module, as the learning-rate monitor saw them
    lrs = [float(r["lr-AdamW/pg1"]) for r in rows if r.get("lr-AdamW/pg1")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[2] == pytest.approx(1e-2)  # 0.4 epoch x 5 steps = 2 warm-up steps
    assert lrs[-1] == pytest.approx(1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 27 / 28)), rel=1e-6)
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)
    assert state["global_step"] == 30 and state["hyper_parameters"]["model_args"] == {"num_classes": 2}
    cfg = state["zoo_data_cfg"]
    assert cfg["input_size"] == [3, SIZE, SIZE] and cfg["label_names"] == ["blue", "red"]
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875


def test_resume_from_last_continues(trained, data, weights):
    """`zoo train ... --ckpt_path last` picks up the saved step and goes on to the new max_steps."""
    out = trained["out"]
    before = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)
    assert zoo_main(["train", "classification", *_args(data, weights, out, 35), "--ckpt_path=last"]) == 0
    after = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)
    assert before["global_step"] == 30 and after["global_step"] == 35
    (new_version,) = [v for v in sorted((out / "logs").glob("version_*")) if v != trained["dir"]]
    steps = [int(r["step"]) for r in _rows(new_version) if r.get("train/loss")]
    assert len(steps) == 5 and min(steps) >= 30, steps  # five new steps, none of the first 30 again
    # the schedule went on from step 30 instead of restarting its warm-up
    lrs = [float(r["lr-AdamW/pg1"]) for r in _rows(new_version) if r.get("lr-AdamW/pg1")]
    assert lrs[0] < 3e-3


def test_resume_restores_optimizer_and_schedule(data, tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step
            self.opt = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()} for k, s in trainer.optimizers[0].state_dict()["state"].items()}
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.sched_epoch = trainer.lr_scheduler_configs[0].scheduler.last_epoch

    def run(steps, ckpt_path=None, probe=None):
        dm = ClassificationDataModule(str(data), image_size=SIZE, batch_size=8, num_workers=0)
        module = ClassificationModule(MODEL, {"num_classes": 2}, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="cosine", weight_decay=1e-4)
        trainer = L.Trainer(
            max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)] + ([probe] if probe else []),
        )  # fmt: skip
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return trainer

    run(3)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    probe = Probe()
    trainer = run(5, tmp_path / "last.ckpt", probe)
    assert probe.step == 3 and trainer.global_step == 5
    assert probe.sched_epoch == saved["lr_schedulers"][0]["last_epoch"] == 3
    assert probe.lr == pytest.approx(saved["optimizer_states"][0]["param_groups"][0]["lr"]) and probe.lr < 0.05
    buffers = saved["optimizer_states"][0]["state"]
    assert buffers and set(probe.opt) == set(buffers)
    for k, s in buffers.items():
        torch.testing.assert_close(probe.opt[k]["momentum_buffer"], s["momentum_buffer"], rtol=0, atol=0)


# -------------------------------------------------------------------------------- evaluation


def _direct_eval(net, folder: Path, data_cfg: dict) -> tuple[float, float]:
    """Top-1 and mean CE by hand: PIL -> the model's eval transform -> logits, image by image."""
    tf = build_eval_transform(data_cfg)
    correct, losses = 0, []
    net.eval()
    for label, name in enumerate(sorted(COLOURS)):
        for path in sorted((folder / name).glob("*.png")):
            with torch.no_grad():
                logits = net(tf(Image.open(path).convert("RGB"))[None])
            correct += int(logits.argmax(1).item() == label)
            losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([label]))))
    return correct / len(losses), float(np.mean(losses))


def test_zoo_eval_json_matches_direct_computation(trained, data, capsys):
    ckpt = trained["ckpt"]
    rc = zoo_main(["eval", "classification", "--model", MODEL, "--checkpoint", str(ckpt), "--data", str(data), "--json", "--batch-size", "7"])
    out = capsys.readouterr().out
    assert rc == 0 and len(out.strip().splitlines()) == 1
    res = json.loads(out)
    assert res["data"] == str(data / "val")  # train/ + val/: the val split is evaluated
    assert res["num_images"] == res["images"] == 20 and res["num_classes"] == 2
    assert res["data_cfg"]["input_size"] == [3, SIZE, SIZE]  # from the checkpoint, not the model's 224
    assert res["throughput"] > 0 and res["top5"] == 1.0
    module = ClassificationModule.load_from_checkpoint(ckpt, map_location="cpu")
    data_cfg = resolve_eval_data_cfg(module.net, image_size=SIZE)
    top1, loss = _direct_eval(module.net, data / "val", data_cfg)
    assert res["top1"] == pytest.approx(top1, abs=1e-12)
    assert res["loss"] == pytest.approx(loss, rel=1e-4)
    assert res["top1"] >= 0.9
    # the table form names the metrics
    assert eval_main("classification", ["--model", MODEL, "--checkpoint", str(ckpt), "--data", str(data / "val")]) == 0
    table = capsys.readouterr().out
    assert "top1" in table and f"{res['top1']:.4f}" in table


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3, 0.4], [3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0]])
    top1, top5, top7 = topk_correct(logits, torch.tensor([1, 5]), (1, 5, 7))
    # row 0 ranks 3, 1, 6, 5, 2, 0, 4: label 1 is second; row 1 ranks 0..6: label 5 is sixth
    assert top1.tolist() == [False, False] and top5.tolist() == [True, False] and top7.tolist() == [True, True]
    assert [t.tolist() for t in topk_correct(logits[:, :2], torch.tensor([1, 0]), (1, 5))] == [[True, True], [True, True]]


def test_eval_transform_is_the_models_timm_config(data):
    import timm.data

    net = zoo.create(MODEL, num_classes=2)
    ref = timm.data.resolve_data_config({}, model=net)
    assert resolve_eval_data_cfg(net) == ref
    # the registry's preprocessing for these weights, as timm publishes it
    assert tuple(ref["input_size"]) == (3, 224, 224) and ref["interpolation"] == "bicubic" and ref["crop_pct"] == 0.875
    assert tuple(ref["mean"]) == (0.485, 0.456, 0.406) and tuple(ref["std"]) == (0.229, 0.224, 0.225)
    dm = ClassificationDataModule(str(data), image_size=None, batch_size=4, num_workers=0, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    dm.set_model(net)
    dm.setup("fit")
    assert dm.eval_data_cfg == ref and dm.classes == ["blue", "red"] and dm.num_classes == 2
    img = Image.open(next((data / "val" / "red").glob("*.png"))).convert("RGB")
    expected = timm.data.create_transform(**ref)(img)
    assert expected.shape == (3, 224, 224)
    _, y = dm.val_set[len(dm.val_set) - 1]
    assert y == 1 and torch.equal(dm.val_set.transform(img), expected)
    names = [type(t).__name__ for t in dm.train_set.transform.transforms]
    assert names[0] == "RandomResizedCropAndInterpolation" and "RandAugment" in names and "RandomErasing" in names
    # evaluate_classification uses the very same config
    small = zoo.create(MODEL, num_classes=2)
    res = evaluate_classification(small, data, image_size=SIZE, batch_size=16)
    assert res["data_cfg"] == {**{k: list(v) if isinstance(v, tuple) else v for k, v in ref.items()}, "input_size": [3, SIZE, SIZE]}


def test_eval_bad_input(data, tmp_path, capsys):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    cases = [
        (["--model", MODEL, "--data", str(tmp_path / "nope")], "does not exist"),
        (["--model", MODEL, "--data", str(data)], "predicts 1000 classes"),  # 2 class folders
        (["--model", MODEL, "--data", str(tmp_path / "empty")], "no valid file"),
        (["--model", MODEL, "--data", str(tmp_path / "flat")], "no class sub-folders"),
        (["--model", MODEL, "--data", str(data), "--dataset", "cifar10"], "CIFAR-10 not found"),
    ]
    for argv, needle in cases:
        assert eval_main("classification", argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert captured.out == "" and err.startswith("error: ") and "\n" not in err and needle in err, err
    # class names recorded by a checkpoint must match the folders
    net = zoo.create(MODEL, num_classes=2)
    net.pretrained_cfg["label_names"] = ["cat", "dog"]
    with pytest.raises(ValueError, match="not the model's classes"):
        evaluate_classification(net, data, image_size=SIZE)


# ------------------------------------------------------------------------------------- data


def test_single_folder_split_and_class_checks(data, tmp_path):
    train, val = split_per_class([0] * 10 + [1] * 5, 0.2, seed=3)
    assert len(val) == 3 and sorted(train + val) == list(range(15))
    assert sum(i >= 10 for i in val) == 1 and sum(i < 10 for i in val) == 2  # per class
    assert split_per_class([0] * 10 + [1] * 5, 0.2, seed=3) == (train, val)  # seeded
    dm = ClassificationDataModule(str(data / "train"), val_fraction=0.25, image_size=SIZE, batch_size=4, num_workers=0)
    dm.set_model(zoo.create(MODEL, num_classes=2))
    dm.setup("fit")
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10 and dm.classes == ["blue", "red"]
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    # validation classes must be the training ones
    bad = tmp_path / "bad"
    for split, names in (("train", ("a", "b")), ("val", ("a", "c"))):
        for n in names:
            (bad / split / n).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(bad / split / n / "x.png")
    dm = ClassificationDataModule(str(bad), batch_size=1, num_workers=0)
    with pytest.raises(TaskConfigError, match="only in train: b; only in val: c"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="data folder"):
        ClassificationDataModule(str(tmp_path / "nope"))


def test_cifar_missing_and_offline(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="download=true"):
        open_cifar("cifar10", tmp_path, train=True)
    from torchvision.datasets import cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="downloading it failed .*no network"):
        open_cifar("cifar100", tmp_path, train=False, download=True)
    dm = ClassificationDataModule(str(tmp_path), dataset="cifar10", download=True)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 is not under"):
        dm.prepare_data()


# --------------------------------------------------------------------------- module, losses


def test_losses_and_mixup():
    from timm.loss import SoftTargetCrossEntropy

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    m = ClassificationModule(MODEL, {"num_classes": 4}, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0)
    # label smoothing = cross-entropy against (1 - s) one-hot + s / C (torch's own implementation)
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    assert float(m.loss(logits, y)) == pytest.approx(float(ref), rel=1e-6)
    soft = torch.softmax(torch.randn(6, 4, generator=g), 1)
    assert float(m.loss(logits, soft)) == pytest.approx(float(-(soft * logits.log_softmax(1)).sum(1).mean()), rel=1e-6)
    assert float(SoftTargetCrossEntropy()(logits, soft)) == pytest.approx(float(m.loss(logits, soft)), rel=1e-6)
    # timm's Mixup: soft targets that sum to 1, smoothing folded in (no target below s / C)
    np.random.seed(0)
    x = torch.rand(6, 3, 8, 8)
    xm, t = m.mixup(x.clone(), y)
    assert t.shape == (6, 4) and torch.allclose(t.sum(1), torch.ones(6)) and float(t.min()) >= 0.1 / 4 - 1e-6
    assert not torch.equal(xm, x)
    plain = ClassificationModule(MODEL, {"num_classes": 4})
    assert plain.mixup is None and float(plain.loss(logits, y)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))


def test_mixup_training_step_and_odd_batch():
    torch.manual_seed(0)
    m = ClassificationModule(MODEL, {"num_classes": 2}, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0, scheduler="none")
    m.log = lambda *a, **k: None  # no Trainer here
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 1])
    np.random.seed(1)
    xm, t = m.mixup(x.clone(), y)
    with torch.no_grad():
        ref = -(t * m.net(xm).log_softmax(1)).sum(1).mean()
    opt = m.configure_optimizers()["optimizer"]
    before = m.net.get_classifier().weight.detach().clone()
    np.random.seed(1)  # the same mixing inside the step
    loss = m.training_step((x.clone(), y), 0)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    loss.backward()
    opt.step()
    assert not torch.equal(before, m.net.get_classifier().weight)
    with pytest.raises(TaskConfigError, match="even batch"):
        m.training_step((torch.randn(3, 3, SIZE, SIZE), torch.tensor([0, 1, 0])), 0)


def test_optimizer_groups_and_lr_scaling():
    m = ClassificationModule(MODEL, {"num_classes": 2}, optimizer="sgd", lr=0.1, nesterov=True, weight_decay=1e-4, scheduler="none")
    opt = m.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    plain = [p for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert decayed and plain and all(p.ndim > 1 for p in decayed) and all(p.ndim <= 1 for p in plain)
    assert len(decayed) + len(plain) == len(list(m.net.parameters()))
    m = ClassificationModule(MODEL, {"num_classes": 2}, optimizer="adamw", weight_decay=0.05, filter_bias_and_bn=False, scheduler="none")
    opt = m.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.05]
    from timm.optim import RMSpropTF

    m = ClassificationModule(MODEL, {"num_classes": 2}, optimizer="rmsproptf", lr=0.045, lr_base_batch=1536, eps=1e-3, scheduler="none")
    m.global_batch = lambda: 192 * 8  # 8 devices x 192
    opt = m.configure_optimizers()["optimizer"]
    assert isinstance(opt, RMSpropTF) and opt.param_groups[0]["lr"] == pytest.approx(0.045)
    m.global_batch = lambda: 192
    assert m.configure_optimizers()["optimizer"].param_groups[0]["lr"] == pytest.approx(0.045 / 8)
    for bad, needle in [({"finetune": "partial"}, "finetune must be"), ({"finetune_args": {"x": 1}}, "finetune_args"),
                        ({"optimizer": "lamb"}, "optimizer must be")]:  # fmt: skip
        with pytest.raises(TaskConfigError, match=needle):
            ClassificationModule(MODEL, {"num_classes": 2}, **bad)


@pytest.mark.parametrize("prefix", [True, False])
def test_cosine_schedule_matches_timm(prefix):
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    def timm_lrs(sched_cls, n, **kw):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
        sched = sched_cls(opt, t_in_epochs=False, **kw)
        return [sched._get_lr(t)[0] for t in range(n)]

    t_cos, warm = 40, 7
    ref = timm_lrs(CosineLRScheduler, 60, t_initial=t_cos, lr_min=0.004, warmup_t=warm, warmup_lr_init=0.001, warmup_prefix=prefix)
    # the zoo counts the whole run: warm-up + cosine when the cosine follows the warm-up
    fn = lr_factor_fn(t_cos + warm if prefix else t_cos, warmup=warm, schedule="cosine", warmup_factor=0.001 / 0.4,
                      min_factor=0.004 / 0.4, warmup_prefix=prefix)  # fmt: skip
    np.testing.assert_allclose([0.4 * fn(t) for t in range(60)], ref, rtol=1e-9, atol=1e-12)
    ref = timm_lrs(StepLRScheduler, 50, decay_t=12, decay_rate=0.1, warmup_t=warm, warmup_lr_init=0.001, warmup_prefix=prefix)
    fn = lr_factor_fn(50, warmup=warm, schedule="step", warmup_factor=0.001 / 0.4, decay_every=12, decay_rate=0.1, warmup_prefix=prefix)
    np.testing.assert_allclose([0.4 * fn(t) for t in range(50)], ref, rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------------------- fine-tuning


def test_new_head_on_pretrained_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = zoo.create(MODEL)  # a 1000-class weight file
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    m = ClassificationModule(MODEL, {"num_classes": 3}, checkpoint_path=str(tmp_path / "w.safetensors"))
    assert m.net.num_classes == 3 and m.net.get_classifier().out_features == 3
    sd, ref = m.net.state_dict(), src.state_dict()
    head = {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(sd[k], ref[k]) for k in ref if k not in head)
    assert m.hparams.checkpoint_path == str(tmp_path / "w.safetensors") and m.hparams.model_args == {"num_classes": 3}
    # a 3-class file loads as it is
    save_file(m.net.state_dict(), tmp_path / "w3.safetensors")
    m3 = ClassificationModule(MODEL, {"num_classes": 3}, checkpoint_path=str(tmp_path / "w3.safetensors"))
    assert torch.equal(m3.net.get_classifier().weight, m.net.get_classifier().weight)


def test_linear_probe_trains_only_the_classifier():
    torch.manual_seed(0)
    m = ClassificationModule(MODEL, {"num_classes": 2}, finetune="linear", optimizer="sgd", lr=0.5, scheduler="none")
    m.log = lambda *a, **k: None
    m.train()
    assert not m.net.training and m.net.get_classifier().training
    trainable = {n for n, p in m.net.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    opt = m.configure_optimizers()["optimizer"]
    m.training_step((torch.randn(4, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 1])), 0).backward()
    opt.step()
    after = m.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN statistics untouched too


def test_adaptive_gradient_clipping():
    """timm's AGC (``agc_clip``): every unit's gradient norm at most clip x its weight norm
    (floored at 1e-3), the classifier left alone."""
    torch.manual_seed(0)
    m = ClassificationModule(MODEL, {"num_classes": 2}, agc_clip=0.02, scheduler="none")
    for p in m.net.parameters():
        p.grad = torch.randn_like(p) * 10
    head = {id(p): p.grad.clone() for p in m.net.get_classifier().parameters()}
    m.configure_gradient_clipping(m.configure_optimizers()["optimizer"])

    def unit_norm(t):
        dims = tuple(range(1, t.ndim)) if t.ndim > 1 else None
        return torch.linalg.vector_norm(t, dim=dims, keepdim=t.ndim > 1)

    for p in m.net.parameters():
        if id(p) in head:
            assert torch.equal(p.grad, head[id(p)])
            continue
        limit = 0.02 * unit_norm(p.detach()).clamp(min=1e-3)
        assert bool((unit_norm(p.grad) <= limit * (1 + 1e-5)).all())


def test_train_cli_usage_errors_and_mobiletl(data, tmp_path, capsys):
    base = [
        "-c", str(_config(tmp_path)), f"--data.data_dir={data}", f"--data.image_size={SIZE}", "--data.batch_size=4",
        "--data.num_workers=0", "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    cases = [
        (base + ["--trainer.fast_dev_run=1"], "set model.model_args: {num_classes: 2}"),  # the recipe's 1000 classes
        (base + ["--model.model_args={num_classes: 2}", "--model.finetune=partial"], "finetune must be"),
        (base[:2] + [f"--data.data_dir={tmp_path / 'nope'}"], "data folder"),
    ]
    for argv, needle in cases:
        assert train_main("classification", argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and needle in err[-1], err
    pytest.importorskip("zoo.tasks.classification.mobiletl")
    argv = base + ["--model.model_args={num_classes: 2}", "--model.finetune", "mobiletl", "--model.finetune_args={train_top_blocks: 3}",
                   "--model.optimizer=adamw", "--trainer.fast_dev_run=2"]  # fmt: skip
    assert train_main("classification", argv) == 0


# ------------------------------------------------------------------------------------------ DDP


@pytest.mark.slow
def test_ddp_two_cpu_processes(data, weights, tmp_path):
    """Two gloo processes: the global step counts optimiser steps and the validation accuracy is
    summed over both ranks (it equals a single-process evaluation of the saved weights)."""
    args = [a for a in _args(data, weights, tmp_path, 5) if not a.startswith("--trainer.devices")] + [
        "--trainer.strategy=ddp", "--trainer.devices=2", "--data.batch_size=4",
    ]  # fmt: skip
    code = "from zoo.tasks.cli import train_main; import sys; sys.exit(train_main('classification', sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 5  # 40 images / (2 ranks x 4) = 5 steps = one epoch
    (version,) = sorted((tmp_path / "logs").glob("version_*"))
    (val,) = [float(r["val/top1"]) for r in _rows(version) if r.get("val/top1")]
    module = ClassificationModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    res = evaluate_classification(module.net, data, image_size=SIZE)
    assert val == pytest.approx(res["top1"], abs=1e-6)


# ------------------------------------------------------------------------------------- configs


def test_task_is_registered():
    spec = TASKS["classification"]
    assert spec.module_cls is ClassificationModule and spec.datamodule_cls is ClassificationDataModule
    assert spec.eval_fn is evaluate_classification
    assert "mobilenetv2_100.yaml" in CONFIGS and "cifar10.yaml" in CONFIGS


def _parsed(name: str, capsys) -> dict:
    assert train_main("classification", ["-c", f"classification/{name}", "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_configs_parse_and_name_registered_models(capsys):
    missing = []
    for name in CONFIGS:
        cfg = _parsed(name, capsys)
        model = cfg["model"]["model"]
        assert cfg["data"]["dataset"] in ("folder", "cifar10", "cifar100"), name
        assert cfg["model"]["optimizer"] in ("sgd", "adamw", "rmsproptf"), name
        if model not in zoo.list_models():
            missing.append(f"{name}: {model}")
            continue
        entry = zoo.registry.get_entry(model)
        assert entry.task == "classification", name
        net = zoo.create(model, **(cfg["model"].get("model_args") or {}))
        assert net.num_classes >= 2
    if missing:
        pytest.skip("configs name models not registered yet: " + "; ".join(missing))


def test_recipe_numbers(capsys):
    """Spot checks of the papers' numbers as the configs give them to the module."""
    cfg = _parsed("fcanet50.yaml", capsys)
    assert (cfg["model"]["optimizer"], cfg["model"]["lr"], cfg["model"]["lr_base_batch"]) == ("sgd", 0.1, 256)
    assert (cfg["model"]["weight_decay"], cfg["trainer"]["max_epochs"], cfg["model"]["warmup_epochs"]) == (1e-4, 100, 5)
    cfg = _parsed("eca_resnet50.yaml", capsys)
    assert (cfg["model"]["scheduler"], cfg["model"]["decay_epochs"], cfg["model"]["decay_rate"]) == ("step", 30, 0.1)
    cfg = _parsed("crossformer_t.yaml", capsys)
    assert cfg["model"]["optimizer"] == "adamw" and cfg["trainer"]["max_epochs"] == 300
    assert (cfg["model"]["mixup_alpha"], cfg["model"]["cutmix_alpha"], cfg["model"]["label_smoothing"]) == (0.8, 1.0, 0.1)
    assert cfg["data"]["auto_augment"] == "rand-m9-mstd0.5-inc1" and cfg["data"]["re_prob"] == 0.25


def _one_step_args(name: str, data: Path, tmp: Path, precision: str = "32-true") -> list[str]:
    cfg = yaml.safe_load((CONFIG_DIR / name).read_text())
    model = cfg["model"]["model"]
    size = zoo.registry.get_entry(model).test_size[-1]
    args = dict(cfg["model"].get("model_args") or {}, num_classes=2)
    return [
        "-c", f"classification/{name}", f"--data.data_dir={data}", "--data.dataset=folder", f"--data.image_size={size}",
        "--data.batch_size=2", "--data.num_workers=0", "--model.pretrained=false", f"--model.model_args={json.dumps(args)}",
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.precision={precision}",
        f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip


def test_mobilenetv2_recipe_trains_one_step_bf16(data, tmp_path, monkeypatch):
    """The recipe as shipped (RMSprop, step decay per epoch, EMA, bf16 mixed precision), on a CPU."""
    monkeypatch.chdir(tmp_path)  # the recipe's relative checkpoint folder lands here
    assert yaml.safe_load((CONFIG_DIR / f"{MODEL}.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    assert zoo_main(["train", "classification", *_one_step_args(f"{MODEL}.yaml", data, tmp_path, "bf16-mixed")]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", [c for c in CONFIGS if c != f"{MODEL}.yaml"])
def test_recipe_trains_one_step(name, data, tmp_path, monkeypatch):
    model = yaml.safe_load((CONFIG_DIR / name).read_text())["model"]["model"]
    if model not in zoo.list_models():
        pytest.skip(f"{name} names {model}, not registered yet")
    monkeypatch.chdir(tmp_path)
    assert train_main("classification", _one_step_args(name, data, tmp_path)) == 0
