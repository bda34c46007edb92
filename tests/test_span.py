"""The SPAN family (SPAN, SPAN ch28, SPAN-F, DSCLoRA): parity with spandrel's SPAN, train form vs
deploy form, the authors' SPAN-F file on Set5, LoRA merging, and the DSCLoRA distillation recipe."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from zoo.cost import count_params
from zoo.hub import save_safetensors, sha256_file
from zoo.models.span import SPAN, Conv3XC, LoRAConv2d
from zoo.registry import get_entry

ROOT = Path(__file__).resolve().parents[1]
SPANF_SET5_X4 = 31.774  # the authors' code with team24_spanf.pth (../shared/upstream/README.md)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _lr(h: int = 20, w: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ spandrel parity


@pytest.fixture(scope="module")
def spandrel_pair(tmp_path_factory):
    """spandrel's SPAN (48 ch, x4) with seeded weights, and ours loaded from the same file."""
    from spandrel.architectures.SPAN import SPAN as SpandrelSPAN

    torch.manual_seed(0)
    ref = SpandrelSPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4)
    # eval_conv stays at its random init in the file, as in a checkpoint saved mid-training:
    # the authors' inference re-fuses it from the branches, and so must we.
    path = tmp_path_factory.mktemp("span") / "span_rand.pth"
    torch.save({k: v.clone() for k, v in ref.state_dict().items()}, path)
    ours = zoo.create("span_ch48_x4", checkpoint_path=path)
    return ref, ours, path


def test_spandrel_parity_train_and_deploy(spandrel_pair):
    ref, ours, path = spandrel_pair
    assert count_params(ours) == count_params(ref) == get_entry("span_ch48_x4").params
    x = _lr()
    with torch.no_grad():
        ref.train(), ours.train()
        assert _rel_err(ours(x), ref(x)) < 1e-5  # train form: the branches
        ref.eval(), ours.eval()
        want = ref(x)  # spandrel fuses into eval_conv on every eval forward
        assert _rel_err(ours(x), want) < 1e-5
        fast = zoo.optimize(ours)
        assert _rel_err(fast(x), want) < 1e-5
        deploy = zoo.create("span_ch48_x4", checkpoint_path=path, deploy=True).eval()  # fused by the filter
        assert _rel_err(deploy(x), want) < 1e-5
    assert count_params(fast) == count_params(deploy) == 426_288
    assert not any(isinstance(m, Conv3XC) and hasattr(m, "sk") for m in fast.modules())
    assert sum(1 for _ in fast.modules()) < sum(1 for _ in ours.modules())
    assert sorted(fast.state_dict()) == sorted(deploy.state_dict())
    assert all(".sk." not in k and ".conv." not in k for k in deploy.state_dict())


def test_params_match_spandrel_x2():
    from spandrel.architectures.SPAN import SPAN as SpandrelSPAN

    ref = SpandrelSPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=2)
    assert count_params(ref) == count_params(zoo.create("span_ch48_x2")) == get_entry("span_ch48_x2").params


def test_eval_conv_follows_the_branches():
    """Upstream re-fuses eval_conv before every eval forward: after training steps, a load or a
    save, ``eval_conv`` must be the fused kernel of the current branches."""
    m = zoo.create("span_ch48_x4", channels=8, num_blocks=2)
    x = _lr(12, 12)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    m(x).mean().backward()
    opt.step()
    with torch.no_grad():
        branches = m(x)
        assert _rel_err(m.eval()(x), branches) < 1e-5
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        for k in sd:
            if ".conv.1." in k:
                sd[k] = sd[k] * 1.5
        m.load_state_dict(sd)  # in eval mode: refreshed by the load hook
        got = m(x)
        assert _rel_err(got, m.train()(x)) < 1e-5
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen and all(".eval_conv." in n for n in frozen)


# --------------------------------------------------------------------- deploy form, optimize


@pytest.mark.parametrize(
    "name, args, deploy_params",
    [("span_ch28_x4", {}, 150_688), ("spanf_ch32_x4", {}, 148_288), ("span_ch48_x2", {"channels": 16, "num_blocks": 2}, None)],
)
def test_optimize_equals_and_deploy_round_trip(name, args, deploy_params, tmp_path):
    torch.manual_seed(0)
    m = zoo.create(name, **args).eval()
    x = _lr()
    with torch.no_grad():
        want = m(x)
        fast = zoo.optimize(m)
        assert _rel_err(fast(x), want) < 1e-5
    assert sum(1 for _ in fast.modules()) < sum(1 for _ in m.modules())
    if deploy_params is not None:
        assert count_params(fast) == deploy_params
    # the deploy form's state dict loads into a model built in deploy form, outputs unchanged
    f = save_safetensors(fast.state_dict(), tmp_path / "deploy.safetensors")
    again = zoo.create(name, checkpoint_path=f, deploy=True, **args).eval()
    assert again.deploy and count_params(again) == count_params(fast)
    with torch.no_grad():
        assert torch.equal(again(x), fast(x))
    # ... but not into the train form: its branches cannot be recovered
    with pytest.raises(zoo.CheckpointError, match="deploy=True"):
        zoo.create(name, checkpoint_path=f, deploy=False, **args)


# ---------------------------------------------------------------------- the authors' SPAN-F


def test_spanf_upstream_set5_parity(upstream_dir, set5_dir):
    from zoo.tasks.sr.evaluate import evaluate_sr

    path = upstream_dir / "sr" / "spanf_ch32_x4_ntire25.pth"
    cfg = get_entry("spanf_ch32_x4").get_cfg()
    assert cfg.verified and sha256_file(path) == cfg.sha256
    model = zoo.create("spanf_ch32_x4", checkpoint_path=path)  # the cfg builds the deploy form
    assert model.deploy and count_params(model) == 148_288
    r = evaluate_sr(model, set5_dir, 4)
    assert r["num_images"] == 5 and r["model"] == "spanf_ch32_x4"
    assert abs(r["psnr_y"] - SPANF_SET5_X4) < 0.01, r["psnr_y"]


def test_wrong_files_error_clearly(upstream_dir, tmp_path):
    with pytest.raises(zoo.CheckpointError, match="does not fit architecture 'spanf_ch32_x4'"):
        zoo.create("spanf_ch32_x4", checkpoint_path=upstream_dir / "sr" / "rlfn_x4.pth")
    with pytest.raises(zoo.CheckpointError, match="deploy=True"):
        zoo.create("spanf_ch32_x4", checkpoint_path=upstream_dir / "sr" / "spanf_ch32_x4_ntire25.pth", deploy=False)
    with pytest.raises(zoo.CheckpointError, match="does not fit architecture 'span_ch28_x4'"):
        zoo.create("span_ch28_x4", checkpoint_path=upstream_dir / "sr" / "spanf_ch32_x4_ntire25.pth")
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((upstream_dir / "sr" / "spanf_ch32_x4_ntire25.pth").read_bytes()[:50_000])
    with pytest.raises(zoo.CheckpointError, match="corrupt or truncated"):
        zoo.create("spanf_ch32_x4", checkpoint_path=truncated)


# -------------------------------------------------------------------------------- DSCLoRA


def _with_lora_update(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRAConv2d):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.01)
    return model


def test_dsclora_layout_and_merge(tmp_path):
    m = _with_lora_update(zoo.create("dsclora_x4")).eval()
    lora = {n for n, _ in m.named_modules() if isinstance(_, LoRAConv2d)}
    assert lora == {f"block_{i}.c{j}_r.eval_conv" for i in range(1, 7) for j in (1, 2, 3)} | {"conv_2.eval_conv", "upsampler.0"}
    assert {(m.get_submodule(n).r, m.get_submodule(n).lora_alpha) for n in ("conv_2.eval_conv", "upsampler.0")} == {(8, 16.0)}
    assert m.get_submodule("block_3.c2_r.eval_conv").r == 2
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # ConvLoRA as loralib computes it: weight + (B @ A).view(weight.shape) * alpha / r
    conv = m.get_submodule("upsampler.0")
    feat = torch.randn(1, 26, 6, 7)
    w = conv.weight + (conv.lora_B @ conv.lora_A).view(conv.weight.shape) * (16 / 8)
    torch.testing.assert_close(conv(feat), torch.nn.functional.conv2d(feat, w, conv.bias, padding=1))
    x = _lr()
    with torch.no_grad():
        want = m(x)
        merged = zoo.optimize(m)
        assert _rel_err(merged(x), want) < 1e-5
    assert not any(isinstance(mod, LoRAConv2d) for mod in merged.modules())
    assert count_params(merged) == 130_828 and count_params(m) == get_entry("dsclora_x4").params
    # merged, it is a plain SPAN (deploy form, 26 channels): its state dict loads there as is
    plain = SPAN(scale=4, channels=26, deploy=True).eval()
    plain.load_state_dict(merged.state_dict())
    with torch.no_grad():
        assert _rel_err(plain(x), want) < 1e-5
    # a plain SPAN file of the base's size loads into DSCLoRA (LoRA at zero: the same network)
    f = save_safetensors(plain.state_dict(), tmp_path / "span26.safetensors")
    student = zoo.create("dsclora_x4", checkpoint_path=f).eval()
    with torch.no_grad():
        assert torch.equal(student(x), plain(x))


# --------------------------------------------------------------------------- distillation


def test_affinity_loss_chunked_equals_full():
    from zoo.tasks.sr.distill import affinity_l1, spatial_affinity

    fs = torch.randn(2, 5, 9, 11, requires_grad=True)
    ft = torch.randn(2, 7, 9, 11)
    full = torch.nn.functional.l1_loss(spatial_affinity(fs), spatial_affinity(ft))
    chunked = affinity_l1(fs, ft, max_affinity_elements=500)
    torch.testing.assert_close(chunked, full)
    (g_full,) = torch.autograd.grad(full, fs)
    (g_chunk,) = torch.autograd.grad(chunked, fs)
    torch.testing.assert_close(g_chunk, g_full)
    aff = spatial_affinity(ft)
    assert aff.shape == (2, 99, 99) and torch.allclose(aff.diagonal(dim1=1, dim2=2), torch.ones(2, 99), atol=1e-5)


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory):
    """Four steps of `zoo train sr -c sr/dsclora_x4.yaml` on three small scikit-image photos,
    with a tiny student and teacher started from files (so their initial weights are known)."""
    import skimage.data

    from zoo.tasks.cli import train_main

    root = tmp_path_factory.mktemp("distill")
    for name in ("astronaut", "chelsea", "coffee"):
        img = Image.fromarray(getattr(skimage.data, name)()).resize((80, 72), Image.BICUBIC)
        (root / "train").mkdir(exist_ok=True)
        img.save(root / "train" / f"{name}.png")
    torch.manual_seed(0)
    student = zoo.create("dsclora_x4", channels=8, num_blocks=3)
    teacher = zoo.create("span_ch48_x4", channels=12, num_blocks=3).eval()
    s_file = save_safetensors(student.state_dict(), root / "student.safetensors")
    t_file = save_safetensors(teacher.state_dict(), root / "teacher.safetensors")
    out = root / "run"
    args = [
        "-c", "sr/dsclora_x4.yaml",
        f"--data.train_dir={root / 'train'}", "--data.batch_size=2", "--data.patch_size=16",
        "--data.num_workers=0", "--data.repeat=4", "--data.cache=true",
        "--model.init_args.model_args={channels: 8, num_blocks: 3}", f"--model.init_args.checkpoint_path={s_file}",
        "--model.init_args.teacher_args={channels: 12, num_blocks: 3}", f"--model.init_args.teacher_checkpoint={t_file}",
        "--model.init_args.max_affinity_elements=20000",  # exercise the chunked affinity path
        "--model.init_args.lr=0.01",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.max_steps=4", "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    assert train_main("sr", args) == 0
    (version,) = sorted((out / "logs").glob("version_*"))
    return {"student": student.state_dict(), "teacher": teacher.state_dict(), "dir": version}


def test_distillation_trains_only_lora(distill_run):
    with open(distill_run["dir"] / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 4
    for key in ("train/loss", "train/l_rec", "train/l_ts", "train/l_ad"):
        values = [float(r[key]) for r in rows]
        assert all(math.isfinite(v) for v in values), (key, values)
    assert float(rows[0]["train/l_ad"]) > 0
    ckpt = torch.load(distill_run["dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4 and ckpt["hyper_parameters"]["model"] == "dsclora_x4"
    sd = ckpt["state_dict"]
    changed, kept = [], []
    for k, before in distill_run["student"].items():
        (changed if not torch.equal(sd[f"net.{k}"], before) else kept).append(k)
    lora = [k for k in distill_run["student"] if k.endswith(("lora_A", "lora_B"))]
    assert sorted(changed) == sorted(lora), set(changed) ^ set(lora)
    assert kept and not any(k.endswith(("lora_A", "lora_B")) for k in kept)
    for k, before in distill_run["teacher"].items():  # the frozen teacher is untouched
        assert torch.equal(sd[f"teacher.{k}"], before), k


def test_distilled_student_evaluates_and_merges(distill_run, tmp_path):
    from zoo.tasks.cli import load_eval_model

    net = load_eval_model("dsclora_x4", str(distill_run["dir"] / "checkpoints" / "last.ckpt")).eval()
    x = _lr(16, 16)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 3, 64, 64) and torch.isfinite(y).all()
        assert _rel_err(zoo.optimize(net)(x), y) < 1e-5


def test_shipped_span_configs_parse(capsys):
    import yaml

    from zoo.tasks.cli import train_main

    for name in ("span_ch48_x4", "span_ch28_x4", "spanf_ch32_x4", "dsclora_x4"):
        assert (ROOT / "configs" / "sr" / f"{name}.yaml").is_file()
        assert train_main("sr", ["-c", f"sr/{name}.yaml", "--print_config"]) == 0
        cfg = yaml.safe_load(capsys.readouterr().out)
        model = cfg["model"].get("init_args", cfg["model"])
        assert model["model"] == name and cfg["data"]["scale"] == 4
        if name == "dsclora_x4":
            assert cfg["model"]["class_path"] == "zoo.tasks.sr.distill.SRDistillModule"
            assert model["teacher"] == "span_ch48_x4" and model["lambda_ad"] > 0
        else:
            assert "class_path" not in cfg["model"] and model["lr"] == 5e-4
