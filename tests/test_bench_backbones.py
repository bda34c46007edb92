"""timm as the reference implementation for backbone speed ratios, and the README table built
from `zoo bench --compare timm --json` runs at batch 1 and 32."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.cost import bench_model
from zoo.docs import backbone_bench_table
from zoo.reference import TIMM_EQUIVALENTS, ReferenceUnavailable, reference_model


def test_timm_reference_has_our_weights():
    torch.manual_seed(0)
    m = zoo.create("mobilenetv2_100", num_classes=10).eval()
    ref = reference_model(m, "timm")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref(x), m(x))


@pytest.mark.parametrize("zoo_name", sorted(n for n in TIMM_EQUIVALENTS if zoo.is_model(n)))
def test_timm_equivalents_take_our_state_dict(zoo_name):
    m = zoo.create(zoo_name).eval()
    ref = reference_model(m, "timm")  # strict load: any name or shape difference raises
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), m(x), rtol=1e-5, atol=1e-5)


def test_no_timm_equivalent_is_a_clear_error():
    m = zoo.create("rlfn_s_x4")
    with pytest.raises(ReferenceUnavailable, match="timm has no implementation of rlfn_s_x4"):
        reference_model(m, "timm")
    with pytest.raises(ReferenceUnavailable, match="known: spandrel, timm"):
        reference_model(m, "onnx")


def test_backbone_bench_table_joins_batches():
    rows = [bench_model("mobilenetv2_100", batch=b, input_size=(3, 64, 64), warmup=1, repeats=2, compare="timm") for b in (1, 32)]
    assert all(r["reference"] == "timm:mobilenetv2_100" and r["reference_max_abs_diff"] == 0.0 for r in rows)
    assert all(r["speedup_vs_reference"] > 0 for r in rows)
    table = backbone_bench_table(rows).splitlines()
    assert len(table) == 3 and table[2].startswith("| `mobilenetv2_100` | 3,504,872 |")
    imgs = 32000 / rows[1]["latency_ms"]
    assert f"({imgs:,.0f})" in table[2]
