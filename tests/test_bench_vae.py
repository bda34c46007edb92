"""`zoo bench --decode`: VAE decoders beside their teachers' decoders, image codecs' encode/decode
times (the numbers are timings, so only their presence and the shapes / sizes are asserted)."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.bench_vae import TEACHERS, bench_codec, bench_decoder, teacher_decoder
from zoo.docs import decode_bench_table


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_teacher_architectures_are_the_published_ones():
    # the diffusers configs behind the speed-ups: latent channels of each latent space, and the
    # SD VAE decoder's 49.49M parameters (post_quant_conv + decoder of sd-vae-ft-mse)
    vae, label = teacher_decoder("taesd")
    dec = sum(p.numel() for n, p in vae.named_parameters() if not n.startswith(("encoder.", "quant_conv.")))
    assert dec == 49_490_199 and "Stable Diffusion" in label
    for name in TEACHERS:
        if not name.startswith("turbo"):
            channels = zoo.create(name).latent_channels if name != "taef2" else 32
            cls, cfg, _ = TEACHERS[name]
            assert (cfg or {}).get("latent_channels", channels) == channels, name
    with pytest.raises(ValueError, match="no teacher VAE"):
        teacher_decoder("rae_dinov2_b")


@pytest.mark.parametrize("name", ["taesd", "taesd3"])
def test_diffusers_tiny_autoencoder_is_the_same_network(name):
    """diffusers' AutoencoderTiny (the authors' TAESD, packaged) with our weights decodes the same image."""
    from zoo.bench_vae import diffusers_tiny_autoencoder

    torch.manual_seed(0)
    model = zoo.create(name).eval()
    tiny = diffusers_tiny_autoencoder(model)
    z = torch.randn(1, model.latent_channels, 12, 16, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(tiny.decode(z).sample.add(1).div(2), model.decode(z), rtol=0, atol=1e-6)
        torch.testing.assert_close(tiny.encode(x.mul(2).sub(1)).latents, model.encode(x), rtol=0, atol=1e-5)
    row = bench_decoder(name, size=(64, 64), warmup=0, repeats=1, teacher=False, model=model)
    assert row["authors"] == "diffusers AutoencoderTiny" and row["authors_max_abs_diff"] < 1e-6
    assert row["speedup_vs_authors"] == pytest.approx(row["authors_decode_ms"] / row["decode_ms"], rel=0.01)


def test_decoder_row_beside_its_teacher():
    row = bench_decoder("taesd", size=(64, 64), warmup=0, repeats=1, model=zoo.create("taesd", width=8))
    assert row["latent"] == [1, 4, 8, 8] and row["output"] == [3, 64, 64] == row["teacher_output"]
    assert row["decode_ms"] > 0 and row["teacher_decode_ms"] > 0
    assert row["speedup_vs_teacher"] == pytest.approx(row["teacher_decode_ms"] / row["decode_ms"], rel=0.01)
    with pytest.raises(ValueError, match="multiple of the decoder's stride"):
        bench_decoder("taesd", size=(60, 64), teacher=False, model=zoo.create("taesd", width=8))


def test_video_and_token_decoders_get_their_latent_layouts():
    from zoo.registry import get_entry

    m = zoo.create("turbo_vaed_ltx", **get_entry("turbo_vaed_ltx").test_args)
    row = bench_decoder("turbo_vaed_ltx", video_size=(64, 96), latent_frames=2, warmup=0, repeats=1, teacher=False, model=m)
    assert row["latent"][2:] == [2, 2, 3] and row["output"][1:] == [9, 64, 96] and row["frames"] == 9
    rae = zoo.create("rae_dinov2_b", **get_entry("rae_dinov2_b").test_args)
    row = bench_decoder("rae_dinov2_b", warmup=0, repeats=1, teacher=False, model=rae)
    assert row["latent"] == [1, rae.num_patches, rae.latent_channels] and row["output"] == [3, *(2 * [rae.image_size])]


def test_codec_row_and_cli(capsys):
    from zoo.cli import main

    row = bench_codec("bmshj2018_factorized", size=(64, 64), warmup=0, repeats=1, quality=1)
    assert row["bytes"] > 0 and row["bpp"] == pytest.approx(8 * row["bytes"] / 64**2, abs=1e-4)
    assert row["encode_ms"] > 0 and row["decode_ms"] > 0
    rc = main(["bench", "bmshj2018_factorized", "--decode", "--input-size", "3,64,64", "--repeats", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["kind"] == "codec" and out["size"] == [64, 64]
    table = decode_bench_table([row, {"model": "taesd", "kind": "decoder", "latent": [1, 4, 64, 64], "output": [3, 512, 512],
                                      "params": 2_445_063, "decode_ms": 1700.0, "teacher": "diffusers AutoencoderKL (SD)",
                                      "teacher_params_decoder": 49_490_199, "teacher_decode_ms": 24000.0, "speedup_vs_teacher": 14.12}])
    assert "| `taesd` | 4x64x64 | 3x512x512 | 2.4M | 1,700 | - | AutoencoderKL (SD) | 49.5M | 24,000 | 14.1x |" in table
    assert "| `bmshj2018_factorized` |" in table
