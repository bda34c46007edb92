"""Tiny autoencoders: the authors' TAEF2 files (fp16, as published) reproduce the golden from the
authors' code; the diffusers layout maps onto ours; bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.hub import CheckpointError, save_safetensors
from zoo.weights.filters_vae import filter_taesd

from conftest import need


@pytest.fixture(scope="module")
def taef2_files(upstream_dir):
    enc = need(upstream_dir / "vae" / "taef2_encoder.pth", "the authors' TAEF2 encoder")
    dec = need(upstream_dir / "vae" / "taef2_decoder.pth", "the authors' TAEF2 decoder")
    return enc, dec


@pytest.fixture(scope="module")
def golden(data_dir):
    return np.load(need(data_dir / "golden" / "taef2_butterfly.npz", "the TAEF2 golden"))


def test_taef2_reproduces_the_authors_golden(taef2_files, golden):
    enc, dec = taef2_files
    m = zoo.create("taef2", encoder_path=enc, decoder_path=dec).eval()
    image = torch.from_numpy(golden["image"])
    with torch.no_grad():
        latent = m.encode(image)
        decoded = m.decode(torch.from_numpy(golden["latent"]))
        recon = m(image)
    lat_err = (latent - torch.from_numpy(golden["latent"])).abs().max().item()
    dec_err = (decoded - torch.from_numpy(golden["decoded"])).abs().max().item()
    assert lat_err < 1e-3, lat_err
    assert dec_err < 1e-3, dec_err
    # the full round trip is the golden decode of the golden encode
    assert (recon - torch.from_numpy(golden["decoded"])).abs().max().item() < 2e-3
    # and it is a real reconstruction of the butterfly, not just matching numbers
    psnr = -10 * torch.log10(((recon.clamp(0, 1) - image) ** 2).mean()).item()
    assert psnr > 20, psnr


def test_params_match_the_authors(taef2_files):
    enc, dec = taef2_files
    m = zoo.create("taef2", encoder_path=enc, decoder_path=dec)
    assert sum(p.numel() for p in m.encoder.parameters()) == 1_338_528
    assert sum(p.numel() for p in m.decoder.parameters()) == 1_338_499


def test_wrong_file_for_the_part_is_a_clear_error(taef2_files):
    enc, dec = taef2_files
    with pytest.raises(CheckpointError, match="taef2 encoder"):
        zoo.create("taef2", encoder_path=dec)
    with pytest.raises(CheckpointError):
        zoo.create("taesd", decoder_path=dec)  # 32-channel latent into a 4-channel decoder


def test_diffusers_layout_loads_through_the_filter(tmp_path):
    torch.manual_seed(0)
    ours = zoo.create("taesd").eval()
    sd = ours.state_dict()
    diffusers = {}
    for k, v in sd.items():
        part, idx, rest = k.split(".", 2)
        idx = int(idx) - (1 if part == "decoder" else 0)
        diffusers[f"{part}.layers.{idx}.{rest}"] = v
    assert filter_taesd(diffusers, ours).keys() == sd.keys()
    f = save_safetensors(diffusers, tmp_path / "diffusion_pytorch_model.safetensors")
    torch.manual_seed(1)
    again = zoo.create("taesd", checkpoint_path=f).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))


def test_bad_input():
    m = zoo.create("taesd").eval()
    with pytest.raises(ValueError, match="expected 4 channels"):
        m.decode(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="multiples of 8"):
        m.encode(torch.rand(1, 3, 30, 32))
    x = torch.rand(1, 3, 30, 42)  # forward pads and crops back
    with torch.no_grad():
        assert m(x).shape == x.shape
