"""`zoo train vae` distils a decoder for a diffusers teacher's latent space (a tiny random
AutoencoderKL here); `zoo eval vae` scores reconstructions with PSNR / SSIM equal to a direct
computation; teachers follow diffusers' latent conventions; bad pairings fail clearly."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.hub import save_safetensors
from zoo.tasks.base import TaskConfigError
from zoo.tasks.vae.teachers import VAETeacher, build_teacher, tiny_autoencoder_kl_config

from conftest import need


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread avoids OpenMP's spinning on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _ssim_u8(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data as skd

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        img = Image.fromarray(getattr(skd, name)()).convert("RGB")
        img.resize((img.width // 4, img.height // 4), Image.BICUBIC).crop((0, 0, 100, 100)).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny random AutoencoderKL saved as a diffusers folder (8x down-sampling, 4 channels)."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**tiny_autoencoder_kl_config(latent_channels=4, width=8))
    folder = tmp_path_factory.mktemp("teacher")
    vae.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------- teachers


def test_teacher_latents_follow_diffusers_convention():
    torch.manual_seed(0)
    cfg = tiny_autoencoder_kl_config(latent_channels=4, width=8)
    vae = diffusers.AutoencoderKL(**cfg, scaling_factor=0.5, shift_factor=0.1).eval()
    t = VAETeacher(vae)
    assert (t.latent_channels, t.spatial_ratio, t.video) == (4, 8, False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = t.encode_latents(x)
        ref = (vae.encode(x * 2 - 1).latent_dist.mean - 0.1) * 0.5  # SD3 / FLUX.1 pipelines' convention
        torch.testing.assert_close(z, ref, rtol=0, atol=1e-6)
        y = t.decode_latents(z)
        ref_y = ((vae.decode(z / 0.5 + 0.1).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-6)
    # per-channel statistics in the config (SDXL-style / Wan / Mochi): (mean - m) * s / std
    stats = dict(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0])
    vae2 = diffusers.AutoencoderKL(**cfg, scaling_factor=0.13025, **stats).eval()
    t2 = VAETeacher(vae2)
    with torch.no_grad():
        raw = vae2.encode(x * 2 - 1).latent_dist.mean
        m, s = torch.tensor(stats["latents_mean"]).view(1, 4, 1, 1), torch.tensor(stats["latents_std"]).view(1, 4, 1, 1)
        torch.testing.assert_close(t2.encode_latents(x), (raw - m) * 0.13025 / s, rtol=0, atol=1e-6)
        torch.testing.assert_close(t2.denormalize(t2.encode_latents(x)), raw, rtol=0, atol=1e-5)
    # an image teacher encodes clips frame by frame
    clip = torch.rand(1, 3, 2, 32, 32)
    zc = t.encode_latents(clip)
    assert zc.shape == (1, 4, 2, 4, 4)
    torch.testing.assert_close(zc[:, :, 1], t.encode_latents(clip[:, :, 1]), rtol=0, atol=1e-6)
    assert t.decode_latents(zc).shape == clip.shape
    with pytest.raises(ValueError, match="multiples of 8"):
        t.encode_latents(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="4 channels"):
        t.decode_latents(torch.rand(1, 16, 4, 4))


def test_video_teacher_latents():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        down_block_types=("LTXVideoDownBlock3D",) * 2, layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        spatio_temporal_scaling=(True, False), decoder_spatio_temporal_scaling=(True, False),
        decoder_inject_noise=(False,) * 3, upsample_residual=(False,) * 2, upsample_factor=(1,) * 2,
        downsample_type=("conv", "conv"), patch_size=4, scaling_factor=0.5,
    ).eval()
    vae.latents_mean.uniform_(-1, 1)  # LTX-Video keeps its channel statistics as buffers
    vae.latents_std.uniform_(0.5, 2)
    t = VAETeacher(vae)
    assert (t.video, t.latent_channels, t.spatial_ratio, t.temporal_ratio) == (True, 8, 8, 2)
    clip = torch.rand(1, 3, 5, 32, 32)  # (B, C, T, H, W); 1 + 2k frames
    with torch.no_grad():
        z = t.encode_latents(clip)
        raw = vae.encode(clip * 2 - 1).latent_dist.mean
        m, s = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
        torch.testing.assert_close(z, (raw - m) * 0.5 / s, rtol=0, atol=1e-6)  # LTX pipeline's normalisation
        assert z.shape == (1, 8, 3, 4, 4)
        assert t.decode_latents(z).shape == clip.shape
        # images are one-frame clips ("image mode")
        zi = t.encode_latents(clip[:, :, 0])
        assert zi.shape == (1, 8, 4, 4)
        torch.testing.assert_close(zi, z[:, :, 0], rtol=0, atol=1e-5)  # causal encoder: frame 0 alone


def test_teacher_errors(tmp_path):
    with pytest.raises(ValueError, match="not a diffusers model"):
        build_teacher("AutoencoderNope", config={})
    with pytest.raises(FileNotFoundError, match="not found"):
        build_teacher("AutoencoderKL", str(tmp_path / "missing" / "deeper" / "vae"))
    with pytest.raises(ValueError, match="weights .* or a config"):
        build_teacher("AutoencoderKL")


def test_zoo_vae_as_teacher():
    torch.manual_seed(0)
    t = build_teacher("zoo:taesd")
    assert (t.latent_channels, t.spatial_ratio, t.video) == (4, 8, False)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(t.encode_latents(x), t.vae.encode(x))  # zoo VAEs already speak [0, 1] / scaled latents
        assert torch.equal(t.decode_latents(t.encode_latents(x)), t.vae(x).clamp(0, 1))


# --------------------------------------------------------------------------------- training


def test_distillation_lowers_the_loss(photos):
    from zoo.tasks.vae.data import VAEImageDataset
    from zoo.tasks.vae.module import VAEDistillModule

    torch.manual_seed(0)
    module = VAEDistillModule("taesd", model_args={"width": 16}, teacher_config=tiny_autoencoder_kl_config(width=8), lr=2e-3)
    assert not any(k.startswith("teacher") for k in module.state_dict())  # the frozen teacher stays out
    encoder_before = {k: v.clone() for k, v in module.net.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in module.net.decoder.state_dict().items()}
    (opt,) = module.configure_optimizers()
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in module.net.decoder.parameters())
    ds = VAEImageDataset(photos, patch_size=32, repeat=2)
    batch = torch.stack([ds[i] for i in range(4)])
    losses = []
    for _ in range(15):
        loss, terms, _ = module.losses(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(terms["l1_teacher"].detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(v, module.net.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not all(torch.equal(v, module.net.decoder.state_dict()[k]) for k, v in decoder_before.items())


def test_all_loss_terms_and_encoder_distillation():
    from zoo.tasks.vae.module import VAEDistillModule

    torch.manual_seed(0)
    module = VAEDistillModule(
        "taesd", model_args={"width": 8}, teacher_config=tiny_autoencoder_kl_config(width=8), train_encoder=True,
        image_weight=0.5, perceptual_weight=0.1, feature_weights="random", adversarial_weight=0.1, disc_channels=8,
        disc_conditional=True,
    )
    x = torch.rand(2, 3, 32, 32)
    loss, terms, t = module.losses(x)
    assert set(terms) == {"l1_teacher", "l1_image", "lpips", "g_adv", "encoder_mse"}
    expected = terms["l1_teacher"] + 0.5 * terms["l1_image"] + 0.1 * terms["lpips"] + 0.1 * terms["g_adv"] + terms["encoder_mse"]
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(terms["encoder_mse"], torch.nn.functional.mse_loss(module.net.encode(x), t["z"]))
    assert module.disc.main[0].in_channels == 3 + 4  # image + upsampled latent
    loss.backward()
    assert module.net.encoder[0].weight.grad.abs().sum() > 0  # the encoder trains too
    assert not any(k.startswith("_lpips") for k in module.state_dict())


def test_video_student_on_raw_video_latents():
    """A Turbo-VAED student (decoder only, 5-D latents) distilled on a video teacher's raw
    posterior mean (Turbo-VAED's convention: ``normalize_latents=False``)."""
    from zoo.tasks.vae.module import VAEDistillModule

    if "turbo_vaed_cogvideox" not in zoo.list_models():
        pytest.skip("turbo_vaed_cogvideox is not registered in this checkout")
    torch.manual_seed(0)
    module = VAEDistillModule(
        "turbo_vaed_cogvideox", model_args={"block_out_channels": (8, 8, 16, 16), "layers_per_block": (1, 1, 1, 1, 1)},
        teacher_class="AutoencoderKLCogVideoX", normalize_latents=False,
        teacher_config={"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 16},
    )
    teacher = module.teacher_vae
    assert (teacher.video, teacher.temporal_ratio, teacher.spatial_ratio) == (True, 4, 8)
    x = torch.rand(1, 3, 9, 16, 16)  # 1 + 4k frames
    loss, terms, t = module.losses(x)
    with torch.no_grad():  # the raw mean, although CogVideoX's config scales by 1.15258426
        torch.testing.assert_close(t["z"], teacher.vae.encode(x * 2 - 1).latent_dist.mean, rtol=0, atol=1e-6)
    assert t["z"].shape == (1, 16, 3, 2, 2) and t["student"].shape == t["teacher"].shape == x.shape
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())


def test_pairing_errors_at_construction():
    from zoo.tasks.vae.module import VAEDistillModule

    with pytest.raises(TaskConfigError, match="decodes 16-channel latents but teacher .* makes 4-channel"):
        VAEDistillModule("taesd3", model_args={"width": 8}, teacher_config=tiny_autoencoder_kl_config(width=8))
    with pytest.raises(TaskConfigError, match="up-samples latents 8x but teacher .* down-samples 4x"):
        VAEDistillModule("taesd", model_args={"width": 8}, teacher_config=tiny_autoencoder_kl_config(width=8, downsamples=2))
    with pytest.raises(TaskConfigError, match="has no render"):
        VAEDistillModule("taesd", model_args={"width": 8}, teacher_config=tiny_autoencoder_kl_config(width=8), decode_fn="render")


def test_train_cli_checkpoint_then_eval_cli(photos, teacher_dir, tmp_path, capsys):
    from zoo.cli import main as zoo_main
    from zoo.tasks.cli import train_main

    rc = train_main("vae", [
        "-c", "vae/taesd_distill.yaml", f"--model.teacher={teacher_dir}", "--model.model_args={width: 8}",
        "--model.perceptual_weight=0", "--model.adversarial_weight=0.1", "--model.disc_start=0", "--model.disc_channels=8",
        f"--data.train_dir={photos}", f"--data.val_dir={photos}", "--data.patch_size=32", "--data.val_size=32",
        "--data.batch_size=2", "--data.num_workers=0", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
        "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.callbacks=null",
    ])
    assert rc == 0
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3  # the discriminator's steps do not count
    assert any(k.startswith("disc.") for k in ckpt["state_dict"])
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])
    assert ckpt["zoo_data_cfg"]["vae_teacher"]["latent_channels"] == 4
    capsys.readouterr()

    rc = zoo_main(["eval", "vae", "--model", "taesd", "--checkpoint", str(ckpts[-1]), "--data", str(photos),
                   "--teacher", str(teacher_dir), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["images"] == 3 and res["encoder"] == "teacher"
    for key in ("psnr", "ssim", "psnr_teacher", "ssim_teacher", "teacher_psnr", "decode_ms"):
        assert res[key] is not None and np.isfinite(res[key]), key


# ------------------------------------------------------------------------------- evaluation


def test_eval_cli_equals_direct_computation(photos, tmp_path, capsys):
    from zoo.cli import main as zoo_main

    torch.manual_seed(0)
    f = save_safetensors(zoo.create("taef2").state_dict(), tmp_path / "taef2.safetensors")
    rc = zoo_main(["eval", "vae", "--model", "taef2", "--checkpoint", str(f), "--data", str(photos), "--json",
                   "--max-images", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["images"] == 2 and res["encoder"] == "model"
    m = zoo.create("taef2", checkpoint_path=f).eval()
    psnrs, ssims = [], []
    for row in res["per_image"]:
        img = np.asarray(Image.open(photos / row["image"]))[:96, :96]  # cut to multiples of 8
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = _u8(m.decode(m.encode(x)))
        psnrs.append(_psnr_u8(y, img))
        ssims.append(_ssim_u8(y, img))
        assert row["psnr"] == pytest.approx(psnrs[-1], abs=1e-6)
        assert row["ssim"] == pytest.approx(ssims[-1], abs=1e-9)  # scikit-image computes the same SSIM
        assert np.isfinite(row["decode_ms"]) and row["decode_ms"] > 0
    assert res["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-6)


def test_eval_taef2_authors_weights(photos, upstream_dir, tmp_path):
    from zoo.tasks.vae.evaluate import evaluate_vae

    enc = need(upstream_dir / "vae" / "taef2_encoder.pth", "the authors' TAEF2 encoder")
    dec = need(upstream_dir / "vae" / "taef2_decoder.pth", "the authors' TAEF2 decoder")
    m = zoo.create("taef2", encoder_path=enc, decoder_path=dec)
    res = evaluate_vae(m, photos)
    assert res["images"] == 3
    # a real reconstruction (random weights score ~5-10 dB / SSIM ~0)
    assert res["psnr"] > 20 and res["ssim"] > 0.6, (res["psnr"], res["ssim"])


def test_eval_decoder_with_teacher_and_clips(tmp_path, teacher_dir):
    from zoo.tasks.vae.evaluate import evaluate_vae, psnr

    torch.manual_seed(0)
    teacher = build_teacher("AutoencoderKL", str(teacher_dir))
    model = zoo.create("taesd", width=8).eval()
    rng = np.random.default_rng(0)
    for seq in ("a", "b"):
        (tmp_path / seq).mkdir()
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / seq / f"{k:03d}.png")
    from zoo.tasks.vae.data import VAEClipDataset

    train = VAEClipDataset(tmp_path, frames=3, patch_size=16)
    assert len(train) == 2 and train[0].shape == (3, 3, 16, 16)
    val = VAEClipDataset(tmp_path, frames=3, train=False)
    first = np.asarray(Image.open(tmp_path / "a" / "000.png"))[:32, :40]
    torch.testing.assert_close(val[0][:, 0], torch.from_numpy(first.copy()).permute(2, 0, 1).float() / 255, rtol=0, atol=1e-6)
    res = evaluate_vae(model, tmp_path, teacher=teacher, frames=3)
    assert res["images"] == 2 and res["per_image"][0]["frames"] == 3 and res["encoder"] == "teacher"
    from zoo.tasks.vae.data import read_frames

    clip = read_frames(tmp_path / "a", 0, 3)[None][..., :32, :40]
    assert clip.shape == (1, 3, 3, 32, 40)
    with torch.no_grad():
        z = teacher.encode_latents(clip)
        y = model.decode(z.transpose(1, 2).flatten(0, 1)).clamp(0, 1)  # per frame
        t = teacher.decode_latents(z)
    direct = np.mean([psnr(y[k : k + 1], clip[:, :, k]) for k in range(3)])
    direct_t = np.mean([psnr(y[k : k + 1], t[:, :, k]) for k in range(3)])
    assert res["per_image"][0]["psnr"] == pytest.approx(direct, abs=1e-9)
    assert res["per_image"][0]["psnr_teacher"] == pytest.approx(direct_t, abs=1e-9)


def _write_lossless_video(path, frames: list[np.ndarray], rate: int = 8) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_video_files_read_like_frame_folders(tmp_path, teacher_dir):
    """A video file and a folder of its frames are the same clip: same frames, same eval numbers."""
    from zoo.tasks.vae.data import VAEClipDataset, list_sequences, read_frames
    from zoo.tasks.vae.evaluate import evaluate_vae

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(7)]
    (tmp_path / "folder" / "clip").mkdir(parents=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "folder" / "clip" / f"{k:03d}.png")
    (tmp_path / "video").mkdir()
    _write_lossless_video(tmp_path / "video" / "clip.mkv", frames)
    vid, fold = tmp_path / "video" / "clip.mkv", tmp_path / "folder" / "clip"
    assert list_sequences(tmp_path / "video") == [(vid, 0)]
    assert torch.equal(read_frames(vid), read_frames(fold))
    assert torch.equal(read_frames(vid, 2, 3, frame_stride=2), read_frames(fold, 2, 3, frame_stride=2))
    assert read_frames(vid, 1, 2).shape == (3, 2, 24, 32)
    with pytest.raises(ValueError, match="no frames"):
        read_frames(vid, 7, 2)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot read video file"):
        read_frames(tmp_path / "bad.mp4")
    train = VAEClipDataset(tmp_path / "video", frames=4, patch_size=16)
    assert train[0].shape == (3, 4, 16, 16)
    torch.manual_seed(0)
    teacher = build_teacher("AutoencoderKL", str(teacher_dir))
    model = zoo.create("taesd", width=8).eval()
    a = evaluate_vae(model, tmp_path / "video", teacher=teacher, frames=4)
    b = evaluate_vae(model, tmp_path / "folder", teacher=teacher, frames=4)
    assert a["images"] == b["images"] == 1
    assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-9) and a["ssim"] == pytest.approx(b["ssim"], abs=1e-9)


def test_eval_errors(photos, tmp_path, monkeypatch, capsys):
    from zoo.cli import main as zoo_main
    from zoo.tasks.vae.data import VAEDataModule
    from zoo.tasks.vae.evaluate import evaluate_vae

    assert zoo_main(["eval", "vae", "--model", "taef2", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VAEDataModule(train_dir=str(tmp_path / "nope")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskConfigError, match="no images"):
        evaluate_vae(zoo.create("taesd", width=8), tmp_path / "empty")

    class DecoderOnly(torch.nn.Module):
        latent_channels = 4

        def decode(self, z):
            return z[:, :3]

    with pytest.raises(TaskConfigError, match="give the teacher"):
        evaluate_vae(DecoderOnly(), photos)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no VGG-16 weights there
    assert zoo_main(["eval", "vae", "--model", "taesd", "--data", str(photos), "--lpips", "--max-images", "1"]) == 2
    assert "vgg16 weights not found" in capsys.readouterr().err


def test_lpips_matches_torchmetrics():
    from torchmetrics.functional.image.lpips import _LPIPS

    from zoo.tasks.vae.evaluate import LPIPS

    torch.manual_seed(0)
    ours = LPIPS("random")
    ref = _LPIPS(pretrained=True, net="vgg", pnet_rand=True).eval()  # LPIPS v0.1 linear layers, random VGG
    sd = {}
    for k, v in ours.features.state_dict().items():  # our vgg16().features indices -> torchmetrics' slices
        idx = int(k.split(".")[0])
        sd[f"slice{1 + sum(idx > t for t in (3, 8, 15, 22))}.{k}"] = v
    ref.net.load_state_dict(sd, strict=True)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        mine, theirs = ours(a, b), ref(a, b, normalize=True).flatten()
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert float(ours(a, a).abs().max()) == 0.0


# ----------------------------------------------------------------- RAE: the model's own encoder


def _rae_small_args() -> dict:
    from zoo.registry import get_entry

    return {**get_entry("rae_dinov2_b").test_args, "noise_tau": 0.8}


def test_rae_decoder_trains_on_its_own_frozen_encoder(photos):
    from zoo.tasks.vae.data import VAEImageDataset
    from zoo.tasks.vae.module import OwnEncoder, VAEDistillModule

    torch.manual_seed(0)
    module = VAEDistillModule("rae_dinov2_b", model_args=_rae_small_args(), teacher_class="self", teacher_weight=0.0,
                              image_weight=1.0, lr=3e-3)
    assert isinstance(module.teacher_vae, OwnEncoder)
    assert not any(p.requires_grad for p in module.net.encoder.parameters())
    encoder_before = {k: v.clone() for k, v in module.net.encoder.state_dict().items()}
    (opt,) = module.configure_optimizers()
    ds = VAEImageDataset(photos, patch_size=16, repeat=4)
    batch = torch.stack([ds[i] for i in range(6)])
    module.train()
    z_a, z_b = module.teacher_vae.encode_latents(batch), module.teacher_vae.encode_latents(batch)
    assert not torch.equal(z_a, z_b)  # the authors' latent noise, in training only
    module.eval()
    assert torch.equal(module.teacher_vae.encode_latents(batch), module.teacher_vae.encode_latents(batch))
    module.train()
    losses = []
    for _ in range(25):
        loss, terms, t = module.losses(batch)
        assert set(terms) == {"l1_image"} and torch.equal(t["teacher"], batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert all(torch.equal(v, module.net.encoder.state_dict()[k]) for k, v in encoder_before.items())


def test_rae_self_teacher_refuses_teacher_terms():
    from zoo.tasks.vae.module import VAEDistillModule

    with pytest.raises(TaskConfigError, match="no teacher decode"):
        VAEDistillModule("rae_dinov2_b", model_args=_rae_small_args(), teacher_class="self")  # teacher_weight 1
    with pytest.raises(TaskConfigError, match="no teacher decode"):
        VAEDistillModule("rae_dinov2_b", model_args=_rae_small_args(), teacher_class="self", teacher_weight=0,
                         perceptual_weight=1.0, perceptual_target="teacher")


def test_warmup_cosine_schedule():
    from zoo.tasks.vae.module import VAEDistillModule

    module = VAEDistillModule("rae_dinov2_b", model_args=_rae_small_args(), teacher_class="self", teacher_weight=0,
                              image_weight=1.0, lr=2e-4, scheduler="cosine", warmup_steps=4, min_lr_ratio=0.1)

    class _Trainer:
        estimated_stepping_batches = 14

    module._trainer = _Trainer()  # what configure_optimizers reads
    (opt,), (sched,) = module.configure_optimizers()
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2e-4 * (s + 1) / 4 for s in range(4)]
    expected += [2e-5 + 0.5 * (2e-4 - 2e-5) * (1 + np.cos(np.pi * (s - 4) / 10)) for s in range(4, 14)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


def test_rae_config_trains_through_the_cli(photos, tmp_path):
    from zoo.tasks.cli import train_main

    args = json.dumps(_rae_small_args())
    rc = train_main("vae", [
        "-c", "vae/rae_decoder.yaml", f"--model.model_args={args}", "--model.feature_weights=random",
        "--model.disc_start=1", "--model.disc_channels=8", "--model.disc_layers=1", "--model.warmup_steps=1",
        f"--data.train_dir={photos}", f"--data.val_dir={photos}", "--data.patch_size=16", "--data.val_size=16",
        "--data.batch_size=2", "--data.num_workers=0", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
        "--trainer.precision=32-true", "--trainer.accelerator=cpu", "--trainer.devices=1",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=null",
    ])
    assert rc == 0
    ckpt = torch.load(sorted(tmp_path.rglob("*.ckpt"))[-1], map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3 and any(k.startswith("disc.") for k in ckpt["state_dict"])
    assert ckpt["zoo_data_cfg"]["vae_teacher"]["name"] == "own encoder"
