"""The registry API: register_model, list_models, is_model, info, create, close-match errors."""

from __future__ import annotations

import pytest

import zoo
from zoo import registry
from zoo.pretrained import PretrainedCfg


@pytest.fixture()
def scratch_registry(monkeypatch):
    table = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", table)
    return table


def _register(name, **kw):
    import torch.nn as nn

    args = dict(task="sr", family="test", paper="p", arxiv=None, license="MIT", input_size=(3, 8, 8), name=name)
    args.update(kw)

    @registry.register_model(**args)
    def fn(**kwargs):
        return nn.Identity()

    return fn


def test_duplicate_name_is_an_error(scratch_registry):
    _register("dup_model_x1")
    with pytest.raises(ValueError, match="'dup_model_x1' is already registered"):
        _register("dup_model_x1")


def test_bad_names_and_tags(scratch_registry):
    with pytest.raises(ValueError, match="lowercase"):
        _register("Bad_Name")
    with pytest.raises(ValueError, match="duplicate weight tag 'a'"):
        _register("two_tags", pretrained_cfgs=[PretrainedCfg(tag="a"), PretrainedCfg(tag="a")])


def test_unknown_name_lists_closest():
    with pytest.raises(zoo.UnknownModelError, match=r"unknown model 'rlfn_x3'; closest registered names: .*rlfn_x4"):
        zoo.create("rlfn_x3")
    with pytest.raises(zoo.UnknownModelError, match="rlfn_s_x4"):
        zoo.info("rlfns_x4")


def test_list_models_patterns_and_filters(scratch_registry):
    _register("aaa_test_x2", task="classification")
    assert zoo.list_models("rlfn_*s_x?") == ["rlfn_s_x2", "rlfn_s_x4"]
    assert zoo.list_models(["rlfn_x4", "rlfn_s_x2"]) == ["rlfn_s_x2", "rlfn_x4"]
    assert "aaa_test_x2" not in zoo.list_models(task="sr")
    assert zoo.list_models("*test*", task="classification") == ["aaa_test_x2"]
    assert zoo.list_models("*test*", pretrained=True) == []
    assert zoo.list_models("rlfn_x4", with_tags=True) == ["rlfn_x4.paper"]
    assert zoo.list_models("*", task="sr") == sorted(zoo.list_models("*", task="sr"))


def test_is_model():
    assert zoo.is_model("rlfn_x4") and zoo.is_model("rlfn_x4.paper")
    assert not zoo.is_model("rlfn_x4.nope") and not zoo.is_model("nothing")


def test_info_card():
    card = zoo.info("rlfn_x4", measure=True)
    assert card["task"] == "sr" and card["family"] == "rlfn" and card["arxiv"] == "2205.07514"
    assert card["license"] == "Apache-2.0" and card["input_size"] == [3, 256, 256]
    assert card["measured"]["params"] == card["params"] == 543_740
    assert card["measured"]["gmacs"] == pytest.approx(card["gmacs"], rel=1e-4)
    cfg = card["pretrained"]["paper"]
    assert cfg["url"].endswith("/model_zoo/rlfn_x4.pth") and cfg["verified"] and len(cfg["sha256"]) == 64
    assert cfg["filter_fn"] == "zoo.weights.filters.filter_rlfn"
    assert cfg["metrics"]["set5_x4_psnr_y"] == 32.240


def test_create_sets_pretrained_cfg_and_args():
    m = zoo.create("rlfn_s_x4", num_blocks=2)
    assert m.pretrained_cfg["architecture"] == "rlfn_s_x4" and m.pretrained_cfg["source"] is None
    assert m.zoo_args == {"num_blocks": 2} and m.num_blocks == 2 and m.scale == 4
    with pytest.raises(ValueError, match="bad arguments for model 'rlfn_s_x4'"):
        zoo.create("rlfn_s_x4", nonsense=1)
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4"):
        zoo.create("rlfn_x4", scale=5)


def test_readme_model_table_is_current():
    from pathlib import Path

    from zoo.docs import render

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README model table is stale: run `python -m zoo.docs README.md`"
