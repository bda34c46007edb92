"""Every shipped SR recipe (configs/sr/*.yaml) parses, names a registered SR model of the same
scale, and runs one real training step through `zoo train sr` (LightningCLI fit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import zoo
from zoo.tasks.cli import train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / "configs" / "sr").glob("*.yaml"))


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("hr")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).resize((160, 160)).save(root / f"{name}.png")
    return root


def test_there_are_configs():
    assert "rlfn_x4.yaml" in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_names_a_registered_model(name, capsys):
    assert train_main("sr", ["-c", f"sr/{name}", "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    module = cfg["model"].get("init_args", cfg["model"])  # plain SRModule or a class_path subclass
    model = module["model"]
    entry = zoo.registry.get_entry(model)
    assert entry.task == "sr"
    net = zoo.create(model, **(module.get("model_args") or {}))
    assert cfg["data"]["scale"] == net.scale


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_one_step(name, hr_folder, tmp_path):
    rc = train_main("sr", [
        "-c", f"sr/{name}", f"--data.train_dir={hr_folder}", "--data.val_dir=null", "--data.patch_size=16",
        "--data.batch_size=2", "--data.num_workers=0", "--data.repeat=1", "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ])
    assert rc == 0
