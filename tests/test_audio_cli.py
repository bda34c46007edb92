"""``zoo compress`` / ``zoo decompress`` for audio (.zac) and ``zoo bench`` for audio codecs.

A tiny codec from tests/test_audio_codec_api.py is registered for the duration of each test (mono
causal, and a stereo non-causal one), so the commands run in well under a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from test_audio_codec_api import TinyCodec
from zoo.cli import main as zoo_main
from zoo.container import IMAGE_MAGIC, pack
from zoo.hub import save_safetensors
from zoo.registry import _REGISTRY, get_entry, register_model

MONO, STEREO = "tiny_codec_cli", "tiny_codec_cli_stereo"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is fastest (and avoids OpenMP spinning on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



@pytest.fixture
def codecs(tmp_path):
    """Register the two tiny codecs and save a checkpoint of each; unregister afterwards."""
    for name, kw in ((MONO, dict(causal=True)), (STEREO, dict(causal=False, channels=2))):
        register_model(task="audio_codec", family="tiny", paper="test", arxiv=None, license="MIT",
                       input_size=(kw.get("channels", 1), 800), input_range=(-1.0, 1.0), params=0, gmacs=0.0,
                       name=name, **kw)(lambda **k: TinyCodec(**k))
    ckpts = {}
    for name in (MONO, STEREO):
        torch.manual_seed(1)
        ckpts[name] = save_safetensors(zoo.create(name).state_dict(), tmp_path / f"{name}.safetensors")
    yield ckpts
    for name in (MONO, STEREO):
        _REGISTRY.pop(name, None)


def _write(path: Path, x: np.ndarray, sr: int = 8000, subtype: str = "FLOAT") -> Path:
    sf.write(path, x, sr, subtype=subtype)
    return path


def _signal(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    x = 0.4 * np.sin(2 * np.pi * 300 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    return x.astype(np.float32) if channels > 1 else x[:, 0].astype(np.float32)


def _run(capsys, *argv):
    rc = zoo_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _model(name, ckpt):
    return zoo.create(name, checkpoint_path=ckpt).eval()


def test_compress_decompress_round_trip(codecs, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", _signal(2401))
    zac, out = tmp_path / "a.zac", tmp_path / "out.wav"
    rc, so, err = _run(capsys, "compress", src, zac, "--model", MONO, "--checkpoint", codecs[MONO], "--json")
    assert rc == 0, err
    res = json.loads(so)
    assert res["n_q"] == 3 and res["bytes"] == zac.stat().st_size and res["coding"] == "packed"
    assert res["packed_code_bytes"] == math.ceil(3 * 601 * 4 / 8)  # 601 frames of 3 four-bit codes
    m = _model(MONO, codecs[MONO])
    data = zac.read_bytes()
    assert m.read_header(data)[0]["meta"] == {"source_sample_rate": 8000, "layout": "channels"}
    rc, so, err = _run(capsys, "decompress", zac, out, "--checkpoint", codecs[MONO])
    assert rc == 0, err
    y, sr = sf.read(out, dtype="float32")
    assert sr == 8000 and y.shape == (2401,) and sf.info(str(out)).subtype == "PCM_16"
    # the file holds what the Python API decodes, to 16-bit precision
    ref = m.decompress(data)[0, 0].clamp(-1, 1).numpy()
    assert np.abs(y - ref).max() <= 1 / 32768 + 1e-7
    with torch.no_grad():  # and that is the model's reconstruction (causal model: exact streaming)
        direct = m.decode(m.encode(torch.from_numpy(_signal(2401))[None, None]))[0, 0, :2401].clamp(-1, 1)
    assert np.abs(y - direct.numpy()).max() <= 1 / 32768 + 1e-5


def test_bitrate_and_entropy_coding(codecs, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", _signal(8000))
    rc, so, _ = _run(capsys, "compress", src, tmp_path / "a.zac", "--model", MONO, "--checkpoint", codecs[MONO],
                     "--bitrate", "16", "--entropy-coding", "--json")
    res = json.loads(so)
    assert rc == 0 and res["n_q"] == 2 and res["nominal_kbps"] == 16
    assert res["entropy_coded_bytes"] is not None and res["packed_code_bytes"] == 2 * 2000 * 4 // 8
    assert res["coding"] == ("rans" if res["entropy_coded_bytes"] < res["packed_code_bytes"] else "packed")
    rc, so, _ = _run(capsys, "compress", src, tmp_path / "b.zac", "--model", MONO, "--checkpoint", codecs[MONO],
                     "--bitrate", "16", "--entropy-coding")
    assert rc == 0 and "range-coded" in so and "bit-packed" in so
    rc, _, _ = _run(capsys, "decompress", tmp_path / "a.zac", tmp_path / "a.wav", "--checkpoint", codecs[MONO])
    assert rc == 0 and sf.info(str(tmp_path / "a.wav")).frames == 8000


def test_resampled_input_comes_back_at_its_rate(codecs, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", _signal(3000), sr=12000)
    rc, _, err = _run(capsys, "compress", src, tmp_path / "a.zac", "--model", MONO, "--checkpoint", codecs[MONO])
    assert rc == 0 and "resampled 12000 Hz -> 8000 Hz" in err
    assert _model(MONO, codecs[MONO]).read_header((tmp_path / "a.zac").read_bytes())[0]["length"] == 2000
    rc, _, _ = _run(capsys, "decompress", tmp_path / "a.zac", tmp_path / "a.wav", "--checkpoint", codecs[MONO])
    info = sf.info(str(tmp_path / "a.wav"))
    assert rc == 0 and info.samplerate == 12000 and info.frames == 3000
    rc, _, _ = _run(capsys, "decompress", tmp_path / "a.zac", tmp_path / "b.wav", "--checkpoint", codecs[MONO],
                    "--keep-model-rate")
    info = sf.info(str(tmp_path / "b.wav"))
    assert rc == 0 and info.samplerate == 8000 and info.frames == 2000


def test_stereo_file_through_a_mono_codec_codes_each_channel(codecs, tmp_path, capsys):
    x = _signal(1000, channels=2)
    src = _write(tmp_path / "in.wav", x)
    rc, _, err = _run(capsys, "compress", src, tmp_path / "a.zac", "--model", MONO, "--checkpoint", codecs[MONO])
    assert rc == 0 and "mono codec" in err
    rc, _, _ = _run(capsys, "decompress", tmp_path / "a.zac", tmp_path / "a.wav", "--checkpoint", codecs[MONO],
                    "--subtype", "FLOAT")
    y, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rc == 0 and y.shape == (1000, 2)
    m = _model(MONO, codecs[MONO])
    for c in range(2):  # each channel is that channel coded alone
        alone = m.decompress(m.compress(torch.from_numpy(x[:, c].copy())[None, None]))[0, 0].clamp(-1, 1).numpy()
        np.testing.assert_allclose(y[:, c], alone, atol=1e-6)


def test_stereo_codec(codecs, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", _signal(900, channels=2))
    rc, _, err = _run(capsys, "compress", src, tmp_path / "a.zac", "--model", STEREO, "--checkpoint", codecs[STEREO])
    assert rc == 0, err
    rc, _, _ = _run(capsys, "decompress", tmp_path / "a.zac", tmp_path / "a.wav", "--checkpoint", codecs[STEREO])
    assert rc == 0 and sf.read(tmp_path / "a.wav")[0].shape == (900, 2)


def _assert_fails(capsys, tmp_path, out: Path, match: str, *argv):
    rc, _, err = _run(capsys, *argv)
    assert rc == 2, err
    assert match in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no partial file left


def test_bad_inputs_exit_2_and_leave_no_file(codecs, tmp_path, capsys):
    out = tmp_path / "out.zac"
    nan = _signal(800)
    nan[100] = np.nan
    for name, x, sub, match in (("nan.wav", nan, "FLOAT", "NaN"),
                                ("empty.wav", np.zeros(0, np.float32), "FLOAT", "empty"),
                                ("three.wav", _signal(800, channels=3), "FLOAT", "has 3 channels")):
        src = _write(tmp_path / name, x, subtype=sub)
        _assert_fails(capsys, tmp_path, out, match, "compress", src, out, "--model", STEREO)
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("hello")
    _assert_fails(capsys, tmp_path, out, "cannot read audio", "compress", not_audio, out, "--model", MONO)
    src = _write(tmp_path / "ok.wav", _signal(800))
    _assert_fails(capsys, tmp_path, out, "below the lowest", "compress", src, out, "--model", MONO, "--bitrate", "4")
    _assert_fails(capsys, tmp_path, out, "--quality is for image codecs", "compress", src, out, "--model", MONO,
                  "--quality", "3")


def test_bad_files_exit_2_and_leave_no_file(codecs, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", _signal(800))
    zac = tmp_path / "a.zac"
    assert _run(capsys, "compress", src, zac, "--model", MONO, "--checkpoint", codecs[MONO])[0] == 0
    data = zac.read_bytes()
    out = tmp_path / "out.wav"
    (tmp_path / "cut.zac").write_bytes(data[:-9])
    _assert_fails(capsys, tmp_path, out, "truncated", "decompress", tmp_path / "cut.zac", out,
                  "--checkpoint", codecs[MONO])
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x55
    (tmp_path / "bad.zac").write_bytes(bytes(bad))
    _assert_fails(capsys, tmp_path, out, "checksum", "decompress", tmp_path / "bad.zac", out,
                  "--checkpoint", codecs[MONO])
    (tmp_path / "junk.zac").write_bytes(b"RIFF" + bytes(40))
    _assert_fails(capsys, tmp_path, out, "not a zoo compressed file", "decompress", tmp_path / "junk.zac", out)
    (tmp_path / "img.zac").write_bytes(pack(IMAGE_MAGIC, {"model": "x"}, []))
    _assert_fails(capsys, tmp_path, out, "--model, --subtype", "decompress", tmp_path / "img.zac", out,
                  "--model", MONO)
    # a file from another model, and from the same model with other weights
    _assert_fails(capsys, tmp_path, out, f"made by model '{MONO}', cannot be decoded by '{STEREO}'",
                  "decompress", zac, out, "--model", STEREO, "--checkpoint", codecs[STEREO])
    _assert_fails(capsys, tmp_path, out, "other weights", "decompress", zac, out)


def test_bench_audio_cli_and_api(codecs, capsys):
    rc, so, err = _run(capsys, "bench", MONO, "--seconds", "0.25", "--repeats", "1", "--warmup", "0", "--json")
    assert rc == 0, err
    row = json.loads(so)
    assert row["model"] == MONO and row["seconds"] == 0.25 and row["authors"] is None
    for k in ("encode_rtf", "decode_rtf", "encode_x_realtime"):
        assert math.isfinite(row[k]) and row[k] > 0
    assert row["encode_rtf"] == pytest.approx(row["encode_s"] / 0.25)
    assert row["algorithmic_latency_ms"] == pytest.approx(0.5)
    rc, _, err = _run(capsys, "bench", MONO, "rlfn_s_x4")
    assert rc == 2 and "on their own" in err


@pytest.mark.parametrize("name", [n for n in ("dac_16khz", "encodec_24khz", "encodec_48khz")
                                  if n in zoo.list_models(task="audio_codec")])
def test_bench_beside_the_authors_package_same_codes(name):
    from zoo.bench_audio import bench_audio_codec

    row = bench_audio_codec(name, seconds=0.2, repeats=1, warmup=0, **get_entry(name).test_args)
    assert row["authors"] in ("descript-audio-codec", "encodec")
    assert row["codes_match_authors"] is True  # the same weights give the authors' codes
    for k in ("encode_rtf", "decode_rtf", "authors_encode_rtf", "authors_decode_rtf", "encode_speedup_vs_authors"):
        assert math.isfinite(row[k]) and row[k] > 0
