"""CompressAI's codecs in the zoo: real bitstreams (rate from the bytes close to the model's own
estimate), deterministic and exact round trips, CompressAI's published file layout through the
filter, the .zic container's errors, and `zoo compress` / `zoo decompress`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cli import main as zoo_main
from zoo.container import ContainerError
from zoo.hub import save_safetensors


def _image(h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.02 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def factorized():
    torch.manual_seed(0)
    return zoo.create("bmshj2018_factorized", quality=1).eval()


def test_round_trip_is_exact_and_deterministic(factorized):
    x = _image()
    a, b = factorized.compress_bytes(x), factorized.compress_bytes(x)
    assert a == b
    y = factorized.decompress_bytes(a)
    assert y.shape == x.shape
    with torch.no_grad():
        ref = factorized(x).clamp(0, 1)
    # the decoder sees exactly the symbols the eval forward rounds to
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)


def test_rate_from_bytes_matches_the_likelihoods(factorized):
    x = _image(128, 128, seed=1)
    data = factorized.compress_bytes(x)
    with torch.no_grad():
        est_bits = float(factorized.rate_distortion(x)["bpp"]) * 128 * 128
    real_bits = 8 * len(data)
    # range coding costs within a few percent of the entropy, plus the container's fixed header
    assert est_bits * 0.97 < real_bits < est_bits * 1.05 + 8 * 400, (real_bits, est_bits)


@pytest.mark.parametrize("name", ["bmshj2018_hyperprior", "mbt2018_mean"])
def test_hyperprior_codecs_round_trip(name):
    torch.manual_seed(0)
    m = zoo.create(name, quality=1).eval()
    x = _image(64, 64)
    data = m.compress_bytes(x)
    y = m.decompress_bytes(data)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert m.compress_bytes(x) == data


def _compressai_v1_layout(sd: dict) -> dict:
    """CompressAI's published v1 files: DataParallel prefix, ``_matrices.N`` ParameterLists."""
    out = {}
    for k, v in sd.items():
        for new, old in (("matrices", "_matrices"), ("biases", "_biases"), ("factors", "_factors")):
            k = k.replace(f"entropy_bottleneck.{new}.", f"entropy_bottleneck.{old}.")
        out[f"module.{k}"] = v
    return out


def test_published_layout_loads_and_decodes_the_same_bytes(factorized, tmp_path):
    factorized.update(force=True)
    f = tmp_path / "bmshj2018-factorized-prior-1-446d5c7f.pth.tar"
    torch.save(_compressai_v1_layout(factorized.state_dict()), f)
    torch.manual_seed(5)
    loaded = zoo.create("bmshj2018_factorized", quality=1, checkpoint_path=f).eval()
    x = _image()
    assert loaded.compress_bytes(x) == factorized.compress_bytes(x)
    # the zoo's own safetensors round trip too (entropy tables included)
    g = save_safetensors(loaded.state_dict(), tmp_path / "w.safetensors")
    again = zoo.create("bmshj2018_factorized", quality=1, checkpoint_path=g).eval()
    assert again.compress_bytes(x) == factorized.compress_bytes(x)


def test_container_errors(factorized):
    data = factorized.compress_bytes(_image())
    with pytest.raises(ContainerError, match="truncated"):
        factorized.decompress_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    bad[-10] ^= 0xFF
    with pytest.raises(ContainerError, match="checksum"):
        factorized.decompress_bytes(bytes(bad))
    with pytest.raises(ContainerError, match="not a zoo ZIC file"):
        factorized.decompress_bytes(b"RIFF" + data[4:])
    torch.manual_seed(9)
    other = zoo.create("bmshj2018_factorized", quality=1).eval()
    with pytest.raises(ContainerError, match="other bmshj2018_factorized weights"):
        other.decompress_bytes(data)
    q2 = zoo.create("bmshj2018_factorized", quality=2).eval()
    with pytest.raises(ContainerError, match="quality 1"):
        q2.decompress_bytes(data)
    with pytest.raises(ValueError, match="quality must be one of"):
        zoo.create("cheng2020_anchor", quality=8)


def test_cli_compress_decompress(tmp_path, capsys):
    torch.manual_seed(0)
    m = zoo.create("bmshj2018_factorized", quality=1)
    ckpt = save_safetensors(m.state_dict(), tmp_path / "codec.safetensors")
    x = _image(48, 72)
    src = tmp_path / "in.png"
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(src)
    out = tmp_path / "out.zic"
    assert zoo_main(["compress", str(src), str(out), "--model", "bmshj2018_factorized", "--quality", "1",
                     "--checkpoint", str(ckpt), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bytes"] == out.stat().st_size and res["bpp"] == pytest.approx(8 * res["bytes"] / (48 * 72), abs=1e-4)
    back = tmp_path / "back.png"
    assert zoo_main(["decompress", str(out), str(back), "--checkpoint", str(ckpt)]) == 0
    y = np.asarray(Image.open(back))
    assert y.shape == (48, 72, 3)
    # a truncated file is one clear line and exit status 2
    (tmp_path / "cut.zic").write_bytes(out.read_bytes()[:20])
    assert zoo_main(["decompress", str(tmp_path / "cut.zic"), str(back), "--checkpoint", str(ckpt)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert zoo_main(["compress", str(src), str(out), "--model", "rlfn_x4"]) == 2
