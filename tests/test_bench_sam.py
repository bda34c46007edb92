"""`zoo bench` on promptable segmentation: the image encoder (forward) and the prompt encoder +
mask decoder, each beside the authors' implementation holding the same weights."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.cost import bench_model
from zoo.registry import get_entry


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_encoder_and_decoder_beside_the_authors():
    pytest.importorskip("segment_anything")
    args = get_entry("sam_vit_b").test_args
    torch.manual_seed(0)
    model = zoo.create("sam_vit_b", **args)
    size = (3, model.img_size, model.img_size)
    row = bench_model("sam_vit_b", model=model, input_size=size, warmup=0, repeats=1, compare="authors")
    assert row["reference"].startswith("authors:")
    assert row["reference_max_abs_diff"] < 1e-4  # the same network: the embeddings agree
    for key in ("latency_ms", "reference_latency_ms", "decoder_latency_ms", "reference_decoder_latency_ms"):
        assert row[key] > 0, key
    assert row["decoder_speedup_vs_reference"] == pytest.approx(row["reference_decoder_latency_ms"] / row["decoder_latency_ms"], rel=0.01)
    plain = bench_model("sam_vit_b", model=model, input_size=size, warmup=0, repeats=1)
    assert plain["decoder_latency_ms"] > 0 and "reference_decoder_latency_ms" not in plain
