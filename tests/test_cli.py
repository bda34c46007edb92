"""The `zoo` command: tables, --json, exports checked against PyTorch, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from zoo.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_table_and_json(capsys):
    rc, out, _ = run(capsys, "list", "rlfn*")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "task", "family", "params", "gmacs", "weights", "license"]
    assert any(line.startswith("rlfn_x4 ") and "543,740" in line and "paper" in line for line in lines)
    rc, out, _ = run(capsys, "list", "--task", "sr", "--pretrained", "--tags", "--json")
    assert rc == 0 and "rlfn_x4.paper" in json.loads(out)


def test_info(capsys):
    rc, out, _ = run(capsys, "info", "rlfn_s_x4")
    assert rc == 0 and "470,208" in out and "verified" in out and "set5_x4_psnr_y=32.241" in out
    rc, out, _ = run(capsys, "info", "rlfn_s_x4", "--json")
    card = json.loads(out)
    assert card["params"] == 470_208 and card["pretrained"]["paper"]["license"] == "Apache-2.0"


def test_bench_json(capsys):
    rc, out, _ = run(capsys, "bench", "rlfn_s_x4", "--input-size", "3,24,24", "--repeats", "2", "--warmup", "1", "--json")
    assert rc == 0
    r = json.loads(out)
    assert r["params"] == 470_208 and r["input_size"] == [3, 24, 24]
    assert r["latency_min_ms"] <= r["latency_ms"] <= r["latency_max_ms"] and r["runs"] >= 2
    assert r["peak_memory_mb"] > 0
    # GMACs scale with the pixel count: 24x24 is (24/256)^2 of the card's 256x256 figure
    assert r["gmacs"] == pytest.approx(29.1208 * (24 / 256) ** 2, rel=2e-3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "rlfn_x9"], "unknown model 'rlfn_x9'; closest registered names: rlfn_x4"),
        (["bench", "rlfn_x4", "--input-size", "a,b"], "--input-size must look like"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["export", "rlfn_x4"], "the following arguments are required: --out"),
        (["export", "rlfn_x4", "--out", "x.onnx", "--checkpoint", "/no/such.pth"], "does not exist"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_export_onnx_checked_with_onnxruntime(capsys, tmp_path):
    out = tmp_path / "rlfn.onnx"
    rc, stdout, _ = run(capsys, "export", "rlfn_s_x4", "--out", str(out), "--input-size", "3,32,32", "--json")
    assert rc == 0
    res = json.loads(stdout)
    assert res["format"] == "onnx" and out.stat().st_size == res["bytes"] > 1_000_000
    assert res["max_abs_err"] < 1e-4
    # the graph has dynamic batch, height and width
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": torch.rand(2, 3, 20, 28).numpy()})[0]
    assert y.shape == (2, 3, 80, 112)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_export_torch_program(capsys, tmp_path):
    out = tmp_path / "rlfn.pt2"
    rc, stdout, _ = run(capsys, "export", "rlfn_s_x4", "--out", str(out), "--input-size", "3,32,32", "--json")
    assert rc == 0
    res = json.loads(stdout)
    assert res["format"] == "torch" and res["max_abs_err"] <= 1e-5
    prog = torch.export.load(str(out)).module()
    assert prog(torch.rand(1, 3, 32, 32)).shape == (1, 3, 128, 128)


def test_export_hub_cli(capsys, tmp_path, upstream_dir):
    ckpt = upstream_dir / "sr" / "rlfn_s_x4.pth"
    rc, out, _ = run(capsys, "export-hub", "rlfn_s_x4", "--checkpoint", str(ckpt), "--out", str(tmp_path / "h"), "--json")
    assert rc == 0 and json.loads(out)["path"] == str(tmp_path / "h")
    assert (tmp_path / "h" / "model.safetensors").is_file()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "list", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and "rlfn_x4" in json.loads(r.stdout)
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "info", "nope_x4"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: unknown model 'nope_x4'")


def test_zoo_eval_sr_dispatch(capsys, upstream_dir, set5_dir):
    ckpt = upstream_dir / "sr" / "rlfn_s_x4.pth"
    rc, out, _ = run(capsys, "eval", "sr", "--model", "rlfn_s_x4", "--checkpoint", str(ckpt), "--data", str(set5_dir),
                     "--scale", "4", "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["num_images"] == 5 and abs(res["psnr_y"] - 32.241) < 0.01


def test_zoo_train_and_eval_unknown_task(capsys):
    for cmd in ("train", "eval"):
        rc, _, err = run(capsys, cmd, "nosuchtask")
        assert rc == 2 and err.startswith("error: ") and "nosuchtask" in err and err.count("\n") == 1


def test_bench_deploy_and_reference_columns(capsys):
    rc, out, _ = run(capsys, "bench", "rlfn_s_x4", "--input-size", "3,24,24", "--repeats", "2", "--warmup", "1",
                     "--deploy", "--compare", "spandrel", "--json")
    assert rc == 0
    r = json.loads(out)
    # RLFN has no re-parameterisable block: the deploy form is the same network
    assert r["deploy_params"] == r["params"] and r["deploy_max_abs_diff"] == 0.0 and r["deploy_latency_ms"] > 0
    # spandrel has no RLFN: said so, not invented
    assert r["reference"] is None and "spandrel has no implementation of rlfn_s_x4" in r["reference_note"]
