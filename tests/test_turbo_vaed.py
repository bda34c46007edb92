"""Turbo-VAED: the decoupled 3D pixel shuffle, the authors' state-dict layout (key list written
here from their ``autoencoder_kl_turbo_vaed.py`` + ``configs/*.json``), parameter counts, frame
counts, and the whole decoder against an independent float64 transcription of the authors'
forward (their reshape/permute steps, concatenated replicate padding, per-frame 2D upsampler loop)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.hub import CheckpointError
from zoo.models.turbo_vaed import TURBO_VAED_CONFIGS, PixelShuffle3dUpsampler, TurboVAED, pixel_shuffle_3d
from zoo.registry import get_entry
from zoo.weights.filters_vaed import filter_turbo_vaed

NAMES = {"hunyuan": "turbo_vaed_hunyuan", "cogvideox": "turbo_vaed_cogvideox", "ltx": "turbo_vaed_ltx", "dc": "turbo_vaed_dc"}

# The authors' JSON configs, as published (decoder-relevant keys, their names; the projection heads
# are the distillation-only ``aligned_feature_projection_dim``).
AUTHORS_JSON = {
    "hunyuan": dict(latent_channels=16, decoder_block_out_channels=[16, 32, 256, 512], decoder_layers_per_block=[5, 4, 4, 4, 5],
                    patch_size=1, decoder_spatio_only=[True, False, False, False], decoder_is_dw_conv=[False, False, False, True, True],
                    decoder_dw_kernel_size=5, aligned_feature_projection_dim=[[512, 2048]]),
    "cogvideox": dict(latent_channels=16, decoder_block_out_channels=[16, 32, 256, 512], decoder_layers_per_block=[5, 4, 4, 4, 5],
                      patch_size=1, decoder_spatio_only=[True, False, False, False], decoder_is_dw_conv=[False, False, False, True, True],
                      decoder_dw_kernel_size=5, aligned_feature_projection_dim=[[512, 4096]]),
    "ltx": dict(latent_channels=128, decoder_block_out_channels=[64, 128, 256, 512], decoder_layers_per_block=[3, 2, 3, 1, 1],
                patch_size=4, decoder_is_dw_conv=[False, False, False, True, True], decoder_dw_kernel_size=5,
                aligned_feature_projection_dim=[[256, 512]]),
    "dc": dict(latent_channels=128, decoder_block_out_channels=[64, 128, 256, 512], decoder_layers_per_block=[4, 3, 3, 3, 4],
               patch_size=4, decoder_spatio_only=[True, False, False, False], decoder_is_dw_conv=[False, False, False, True, True],
               decoder_dw_kernel_size=5, is_video_dc_ae=True, aligned_feature_projection_dim=[[512, 1024], [512, 1024], [256, 1024]]),
}
DEFAULT_SCALING = [True, True, True, False]  # decoder_spatio_temporal_scaling: no file sets it


def _authors_keys(j: dict) -> dict[str, tuple[int, ...]]:
    """``TurboVAEDDecoder3d.state_dict()`` key -> shape, built the way their constructors do."""
    boc = list(reversed(j["decoder_block_out_channels"]))
    layers = list(reversed(j["decoder_layers_per_block"]))
    scaling = list(reversed(DEFAULT_SCALING))
    only = list(reversed(j.get("decoder_spatio_only", [False] * 4)))
    dws = list(reversed(j["decoder_is_dw_conv"]))
    k5 = j["decoder_dw_kernel_size"]
    keys: dict[str, tuple[int, ...]] = {}

    def conv(p, cin, cout, k, dw):
        if dw:
            keys[f"{p}.depthwise_conv.weight"] = (cin, 1, k, k, k)
            keys[f"{p}.depthwise_conv.bias"] = (cin,)
            keys[f"{p}.pointwise_conv.weight"] = (cout, cin, 1, 1, 1)
            keys[f"{p}.pointwise_conv.bias"] = (cout,)
        else:
            keys[f"{p}.conv.weight"] = (cout, cin, k, k, k)
            keys[f"{p}.conv.bias"] = (cout,)

    def resnet(p, cin, cout, dw):
        k = k5 if dw else 3
        conv(f"{p}.conv1", cin, cout, k, dw)
        conv(f"{p}.conv2", cout, cout, k, dw)
        if cin != cout:
            keys[f"{p}.norm3.weight"] = (cin,)
            keys[f"{p}.norm3.bias"] = (cin,)
            conv(f"{p}.conv_shortcut", cin, cout, 1, dw)

    conv("conv_in", j["latent_channels"], boc[0], 3, False)
    for i in range(layers[0]):
        resnet(f"mid_block.resnets.{i}", boc[0], boc[0], dws[0])
    c = boc[0]
    for b in range(4):
        out = boc[b]
        if c != out:
            resnet(f"up_blocks.{b}.conv_in", c, out, dws[b + 1])
        if scaling[b]:
            mult = 4 if only[b] else 8
            conv(f"up_blocks.{b}.upsamplers.0.conv", out, out * mult, 3, False)
        for i in range(layers[b + 1]):
            resnet(f"up_blocks.{b}.resnets.{i}", out, out, dws[b + 1])
        c = out
    if j["patch_size"] >= 2:
        keys["upsampler2d_1.conv.weight"], keys["upsampler2d_1.conv.bias"] = (c, c, 3, 3), (c,)
        c //= 4
    if j["patch_size"] >= 4:
        keys["upsampler2d_2.conv.weight"], keys["upsampler2d_2.conv.bias"] = (c, c, 3, 3), (c,)
        c //= 4
    if j["patch_size"] != 1:
        keys["norm_out.running_mean"], keys["norm_out.running_var"], keys["norm_out.num_batches_tracked"] = (c,), (c,), ()
    conv("conv_out", c, 3, 3, False)
    return keys


def _fill(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("norm3.weight"):
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 16
            sd[k] = torch.randn(shape, generator=g) / fan_in**0.5
    return sd


def _authors_full_model(j: dict, decoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The whole ``AutoencoderKLTurboVAED`` state dict: decoder, latent stats, projection heads."""
    sd = {f"decoder.{k}": v for k, v in decoder.items()}
    sd["latents_mean"] = torch.zeros(j["latent_channels"])
    sd["latents_std"] = torch.ones(j["latent_channels"])
    for i, (s, t) in enumerate(j["aligned_feature_projection_dim"]):
        sd[f"aligned_feature_projection_heads.{i}.0.conv.weight"] = torch.randn(t, s, 1, 1, 1)
        sd[f"aligned_feature_projection_heads.{i}.0.conv.bias"] = torch.randn(t)
        sd[f"aligned_feature_projection_heads.{i}.1.conv.weight"] = torch.randn(t, t, 1, 1, 1)
        sd[f"aligned_feature_projection_heads.{i}.1.conv.bias"] = torch.randn(t)
    return sd


# ----------------------------------------------------------------------------------------------
# the decoupled 3D pixel shuffle
# ----------------------------------------------------------------------------------------------


def _authors_shuffle(x: torch.Tensor, st: int, s: int) -> torch.Tensor:
    """Steps 1-3 of ``TurboVAEDUpsampler3d.forward`` (reshape / permute / 2D pixel shuffle)."""
    b, _, t, h, w = x.shape
    x = x.reshape(b, -1, st, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, t * st, h, w)
    x = x.permute(0, 2, 1, 3, 4).reshape(b * t * st, -1, h, w)
    x = F.pixel_shuffle(x, s)
    _, c, h2, w2 = x.shape
    return x.reshape(b, t * st, c, h2, w2).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("st", [1, 2])
def test_pixel_shuffle_3d_equals_the_authors_reshape_permute(st):
    x = torch.randn(2, 3 * 4 * st, 3, 5, 4, dtype=torch.float64)
    ours = pixel_shuffle_3d(x, st, 2, 2)
    ref = _authors_shuffle(x, st, 2)
    assert ours.shape == (2, 3, 3 * st, 10, 8)
    assert torch.equal(ours, ref)
    # and it is a permutation: every input value appears exactly once
    assert torch.equal(ours.flatten().sort().values, x.flatten().sort().values)


def test_upsampler_conv_shuffle_and_first_frame_slice():
    torch.manual_seed(0)
    up = PixelShuffle3dUpsampler(3, (2, 2, 2)).double()
    keep = PixelShuffle3dUpsampler(3, (2, 2, 2), keep_first_frames=True).double()
    keep.load_state_dict(up.state_dict())
    x = torch.randn(1, 3, 4, 3, 3, dtype=torch.float64)
    # the authors' conv: edge frames replicated by concatenation, zero padding in space
    xp = torch.cat([x[:, :, :1], x, x[:, :, -1:]], 2)
    conv = F.conv3d(xp, up.conv.conv.weight, up.conv.conv.bias, padding=(0, 1, 1))
    ref = _authors_shuffle(conv, 2, 2)
    assert torch.allclose(keep(x), ref, atol=1e-12)
    assert torch.allclose(up(x), ref[:, :, 1:], atol=1e-12)
    assert up(x).shape[2] == 2 * 4 - 1 and keep(x).shape[2] == 2 * 4


# ----------------------------------------------------------------------------------------------
# the authors' layout, parameter counts, loading
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(NAMES))
def test_authors_layout_and_params(config):
    keys = _authors_keys(AUTHORS_JSON[config])
    with torch.device("meta"):
        model = TurboVAED(**TURBO_VAED_CONFIGS[config])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == keys
    params = sum(int(torch.tensor(s).prod()) for k, s in keys.items() if "running_" not in k and "num_batches" not in k)
    assert sum(p.numel() for p in model.parameters()) == params == get_entry(NAMES[config]).params


@pytest.mark.parametrize("config", ["ltx"])
def test_authors_files_load_through_the_filter(config, tmp_path):
    j = AUTHORS_JSON[config]
    decoder = _fill(_authors_keys(j))
    full = _authors_full_model(j, decoder)
    # every decoder key is consumed, only the distillation heads and latent stats are dropped
    out = filter_turbo_vaed(full, None)
    assert out.keys() == decoder.keys()
    assert all(k.startswith(("aligned_feature_projection_heads.", "latents_")) for k in full.keys() - {f"decoder.{k}" for k in decoder})
    name = NAMES[config]
    for i, sd in enumerate((decoder, full)):  # the plain decoder file and the whole-model file
        f = tmp_path / f"w{i}.pth"
        torch.save(sd, f)
        m = zoo.create(name, checkpoint_path=f)
        own = m.state_dict()
        assert all(torch.equal(own[k], v) for k, v in decoder.items())


def test_foreign_file_is_refused(tmp_path):
    sd = _fill(_authors_keys(AUTHORS_JSON["ltx"]))
    f = tmp_path / "ltx.pth"
    torch.save(sd, f)
    with pytest.raises(CheckpointError, match="does not fit"):
        zoo.create("turbo_vaed_cogvideox", checkpoint_path=f)


# ----------------------------------------------------------------------------------------------
# the whole decoder against a float64 transcription of the authors' forward
# ----------------------------------------------------------------------------------------------


def _ref_rms(x):  # RMSNorm(eps=1e-8, no affine) channels-last
    x = x.permute(0, 2, 3, 4, 1)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8)
    return x.permute(0, 4, 1, 2, 3)


def _ref_conv(sd, p, x, k, dw, causal=False):
    if dw:
        pc = (k - 1) // 2
        if k > 1:
            x = torch.cat([x[:, :, :1].repeat(1, 1, pc, 1, 1), x, x[:, :, -1:].repeat(1, 1, pc, 1, 1)], 2)
        w = sd[f"{p}.depthwise_conv.weight"]
        x = F.conv3d(x, w, sd[f"{p}.depthwise_conv.bias"], padding=(0, k // 2, k // 2), groups=w.shape[0])
        return F.conv3d(x, sd[f"{p}.pointwise_conv.weight"], sd[f"{p}.pointwise_conv.bias"])
    if k > 1:
        if causal:
            x = torch.cat([x[:, :, :1].repeat(1, 1, k - 1, 1, 1), x], 2)
        else:
            pc = (k - 1) // 2
            x = torch.cat([x[:, :, :1].repeat(1, 1, pc, 1, 1), x, x[:, :, -1:].repeat(1, 1, pc, 1, 1)], 2)
    return F.conv3d(x, sd[f"{p}.conv.weight"], sd[f"{p}.conv.bias"], padding=(0, k // 2, k // 2))


def _ref_resnet(sd, p, x, dw, k5, relu_first):
    k = k5 if dw else 3
    h = _ref_rms(x)
    h = F.relu(h) if relu_first else F.silu(h)
    h = _ref_conv(sd, f"{p}.conv1", h, k, dw)
    h = F.silu(_ref_rms(h))
    h = _ref_conv(sd, f"{p}.conv2", h, k, dw)
    if f"{p}.norm3.weight" in sd:
        xn = F.layer_norm(x.permute(0, 2, 3, 4, 1), (x.shape[1],), sd[f"{p}.norm3.weight"], sd[f"{p}.norm3.bias"], 1e-6)
        x = _ref_conv(sd, f"{p}.conv_shortcut", xn.permute(0, 4, 1, 2, 3), 1, dw)
    return h + x


def _ref_decoder(j, sd, z):
    layers = list(reversed(j["decoder_layers_per_block"]))
    scaling = list(reversed(DEFAULT_SCALING))
    only = list(reversed(j.get("decoder_spatio_only", [False] * 4)))
    dws = list(reversed(j["decoder_is_dw_conv"]))
    k5 = j["decoder_dw_kernel_size"]
    x = _ref_conv(sd, "conv_in", z, 3, False)
    for i in range(layers[0]):
        x = _ref_resnet(sd, f"mid_block.resnets.{i}", x, dws[0], k5, False)
    for b in range(4):
        if f"up_blocks.{b}.conv_in.conv1.conv.weight" in sd or f"up_blocks.{b}.conv_in.conv1.depthwise_conv.weight" in sd:
            x = _ref_resnet(sd, f"up_blocks.{b}.conv_in", x, dws[b + 1], k5, False)
        if scaling[b]:
            st = 1 if only[b] else 2
            x = _authors_shuffle(_ref_conv(sd, f"up_blocks.{b}.upsamplers.0.conv", x, 3, False), st, 2)
            if not j.get("is_video_dc_ae", False):
                x = x[:, :, st - 1:]
        for i in range(layers[b + 1]):
            x = _ref_resnet(sd, f"up_blocks.{b}.resnets.{i}", x, dws[b + 1], k5, scaling[b])
    if j["patch_size"] >= 2:
        x = F.silu(_ref_rms(x))
        frames = [F.pixel_shuffle(F.conv2d(x[:, :, t], sd["upsampler2d_1.conv.weight"], sd["upsampler2d_1.conv.bias"], padding=1), 2)
                  for t in range(x.shape[2])]
        x = torch.stack(frames, 2)
    if j["patch_size"] >= 4:
        x = F.silu(_ref_rms(x))
        b_, c_, t_, h_, w_ = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b_ * t_, c_, h_, w_)
        y = F.pixel_shuffle(F.conv2d(y, sd["upsampler2d_2.conv.weight"], sd["upsampler2d_2.conv.bias"], padding=1), 2)
        x = y.reshape(b_, t_, -1, 2 * h_, 2 * w_).permute(0, 2, 1, 3, 4)
    if j["patch_size"] == 1:
        x = _ref_rms(x)
    else:  # BatchNorm3d(affine=False) in eval: running statistics
        x = F.batch_norm(x, sd["norm_out.running_mean"], sd["norm_out.running_var"], training=False, eps=1e-5)
    return _ref_conv(sd, "conv_out", F.silu(x), 3, False)


TINY = {  # the published structures at tiny widths (same flags, fewer/narrower layers)
    "p1": dict(latent_channels=4, decoder_block_out_channels=[4, 8, 8, 16], decoder_layers_per_block=[2, 1, 1, 1, 2], patch_size=1,
               decoder_spatio_only=[True, False, False, False], decoder_is_dw_conv=[False, False, False, True, True],
               decoder_dw_kernel_size=5),
    "p4": dict(latent_channels=8, decoder_block_out_channels=[16, 16, 16, 32], decoder_layers_per_block=[1, 1, 2, 1, 1], patch_size=4,
               decoder_is_dw_conv=[False, False, False, True, True], decoder_dw_kernel_size=5),
    "dc": dict(latent_channels=8, decoder_block_out_channels=[16, 16, 16, 32], decoder_layers_per_block=[1, 1, 1, 1, 1], patch_size=4,
               decoder_spatio_only=[True, False, False, False], decoder_is_dw_conv=[False, False, False, True, True],
               decoder_dw_kernel_size=5, is_video_dc_ae=True),
}


def _ours(j: dict) -> TurboVAED:
    return TurboVAED(
        latent_channels=j["latent_channels"], block_out_channels=j["decoder_block_out_channels"],
        layers_per_block=j["decoder_layers_per_block"], spatio_only=j.get("decoder_spatio_only", [False] * 4),
        is_dw_conv=j["decoder_is_dw_conv"], dw_kernel_size=j["decoder_dw_kernel_size"], patch_size=j["patch_size"],
        is_video_dc_ae=j.get("is_video_dc_ae", False),
    )


@pytest.mark.parametrize("tiny", list(TINY))
def test_decoder_matches_the_authors_forward(tiny):
    j = TINY[tiny]
    sd = {k: v.double() if v.is_floating_point() else v for k, v in _fill(_authors_keys(j), seed=1).items()}
    model = _ours(j).double().eval()
    model.load_state_dict(sd)
    z = torch.randn(1, j["latent_channels"], 3, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.decode(z)
        ref = _ref_decoder(j, sd, z)
    assert ours.shape == ref.shape
    err = ((ours * 2 - 1) - ref).abs().max().item()  # ours is in [0, 1], the authors' in [-1, 1]
    assert err < 1e-10, err
    assert ref.std() > 1e-3  # not a degenerate comparison


# ----------------------------------------------------------------------------------------------
# shapes, frames and bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,t_lat,frames,scale",
    [("hunyuan", 5, 17, 8), ("cogvideox", 13, 49, 8), ("ltx", 3, 17, 32), ("ltx", 1, 1, 32), ("dc", 4, 16, 32)],
)
def test_frames_and_sizes_of_the_published_configs(config, t_lat, frames, scale):
    c = TURBO_VAED_CONFIGS[config]["latent_channels"]
    with torch.device("meta"):
        model = TurboVAED(**TURBO_VAED_CONFIGS[config]).eval()
        y = model(torch.empty(1, c, t_lat, 3, 5))
    assert tuple(y.shape) == (1, 3, frames, 3 * scale, 5 * scale)
    assert model.num_frames(t_lat) == frames
    assert model.spatial_stride == scale


def test_bad_latents_get_clear_errors():
    model = zoo.create("turbo_vaed_ltx").eval()
    z = torch.randn(1, 128, 2, 1, 1)
    with pytest.raises(ValueError, match="5-D"):
        model(z[:, :, 0])
    with pytest.raises(ValueError, match="expected 128 channels"):
        model(z[:, :16])
    with pytest.raises(ValueError, match="floating-point"):
        model(z.long())
    with pytest.raises(ValueError, match="at least one latent frame"):
        model(z[:, :, :0])
