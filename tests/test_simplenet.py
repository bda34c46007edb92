"""SimpleNetV1: the authors' state-dict layout, numerics and parameter counts.

No package ships the authors' SimpleNet (PyPI's ``simplenet`` is an unrelated numpy MLP), so the
reference below is written from reading Coderx7/SimpleNet_Pytorch ``ImageNet/simplenet.py`` (the
2023-04 version, unpadded 1x1 convs): their cfg tuples ``(channels or 'p', stride, dropout[, 'k1'])``
verbatim, their stride-mode table, their ``_make_layers`` loop (conv, BN(eps 1e-5, momentum 0.05),
ReLU, Dropout2d per conv; MaxPool2d(2), Dropout2d per pool) and their forward (full-size
``F.max_pool2d``, dropout, flatten, ``classifier``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError
from zoo.weights.filters_simplenet import filter_simplenet

_AUTHORS_CFG = {
    "simplenetv1_imagenet": [
        (64, 1, 0.0), (128, 1, 0.0), (128, 1, 0.0), (128, 1, 0.0), (128, 1, 0.0), (128, 1, 0.0),
        ("p", 2, 0.0), (256, 1, 0.0), (256, 1, 0.0), (256, 1, 0.0), (512, 1, 0.0), ("p", 2, 0.0),
        (2048, 1, 0.0, "k1"), (256, 1, 0.0, "k1"), (256, 1, 0.0),
    ],
    "simplenetv1_imagenet_9m": [
        (128, 1, 0.0), (192, 1, 0.0), (192, 1, 0.0), (192, 1, 0.0), (192, 1, 0.0), (192, 1, 0.0),
        ("p", 2, 0.0), (320, 1, 0.0), (320, 1, 0.0), (320, 1, 0.0), (640, 1, 0.0), ("p", 2, 0.0),
        (2560, 1, 0.0, "k1"), (320, 1, 0.0, "k1"), (320, 1, 0.0),
    ],
}
_AUTHORS_STRIDES = {1: {0: 2, 1: 2, 2: 2}, 2: {0: 2, 1: 2, 2: 1, 3: 2}}

# zoo name -> (the authors' network, scale, mode, params in millions from their README table)
VARIANTS = {
    "simplenet_small_m1_05": ("simplenetv1_imagenet", 0.5, 1, 1.51),
    "simplenet_small_m2_05": ("simplenetv1_imagenet", 0.5, 2, 1.51),
    "simplenet_small_m1_075": ("simplenetv1_imagenet", 0.75, 1, 3.29),
    "simplenet_small_m2_075": ("simplenetv1_imagenet", 0.75, 2, 3.29),
    "simplenet_5m_m1": ("simplenetv1_imagenet", 1.0, 1, 5.75),
    "simplenet_5m_m2": ("simplenetv1_imagenet", 1.0, 2, 5.75),
    "simplenet_9m_m1": ("simplenetv1_imagenet_9m", 1.0, 1, 9.51),
    "simplenet_9m_m2": ("simplenetv1_imagenet_9m", 1.0, 2, 9.51),
}


class AuthorsSimpleNet(nn.Module):
    """The authors' ImageNet SimpleNet, module for module (reference for names and numerics)."""

    def __init__(self, network: str, scale: float, mode: int, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        strides = _AUTHORS_STRIDES[mode]
        for idx, (layer, stride, drop, *kind) in enumerate(_AUTHORS_CFG[network]):
            stride = strides[idx] if len(strides) > idx else stride
            k, pad = (1, 0) if kind == ["k1"] else (3, 1)
            if layer == "p":
                layers += [nn.MaxPool2d(kernel_size=(2, 2), stride=(stride, stride)), nn.Dropout2d(p=drop)]
            else:
                cout = round(layer * scale)
                layers += [
                    nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad),
                    nn.BatchNorm2d(cout, eps=1e-05, momentum=0.05, affine=True),
                    nn.ReLU(inplace=True),
                    nn.Dropout2d(p=drop),
                ]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(round(_AUTHORS_CFG[network][-1][0] * scale), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        out = F.max_pool2d(out, kernel_size=out.size()[2:])
        out = F.dropout2d(out, 0.0, training=self.training)
        return self.classifier(out.view(out.size(0), -1))


def _randomise(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values everywhere, BatchNorm statistics included, scaled so that the signal neither
    dies nor explodes through the depth (the outputs then depend on the input, not just on the
    classifier bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_layout_and_params(name):
    network, scale, mode, readme_m = VARIANTS[name]
    with torch.device("meta"):  # shapes only
        ref = AuthorsSimpleNet(network, scale, mode)
    ours = zoo.create(name)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs), "key names and order must be the authors'"
    assert mine == theirs
    params = count_params(ours)
    assert params == count_params(ref)
    assert round(params / 1e6, 2) == readme_m, (name, params)


@pytest.mark.parametrize("name", ["simplenet_small_m1_05", "simplenet_5m_m2"])
def test_authors_file_loads_and_matches_their_forward(name, tmp_path):
    network, scale, mode, _ = VARIANTS[name]
    ref = AuthorsSimpleNet(network, scale, mode).eval()
    sd = _randomise(ref, seed=1)
    f = tmp_path / "simplenet_authors.pth"
    torch.save(sd, f)
    ours = zoo.create(name, checkpoint_path=f).eval()
    x = torch.randn(2, 3, 72, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h, taps = x, {}
        for i, m in enumerate(ref.features):  # the authors' forward, recording every module's output
            h = m(h)
            taps[i] = h.clone()
        want = ref.classifier(F.max_pool2d(h, kernel_size=h.size()[2:]).flatten(1))
        torch.testing.assert_close(ref(x), want, rtol=0, atol=0)
        got = ours(x)
        feats = ours.forward_intermediates(x, intermediates_only=True)
    # the outputs depend on the input, not only on biases and BatchNorm shifts
    assert (want[0] - want[1]).abs().max() > 0.1 * want.abs().max()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # stage taps are the authors' activations at the recorded module indices
    for info, feat in zip(ours.feature_info, feats, strict=True):
        idx = int(info["module"].split(".")[-1])
        torch.testing.assert_close(feat, taps[idx], rtol=1e-5, atol=1e-5)
        assert feat.shape[1] == info["num_chs"]


def test_feature_stages_are_stride_boundaries():
    m = zoo.create("simplenet_5m_m2")
    assert [i["reduction"] for i in m.feature_info] == [2, 4, 8, 16, 32]
    assert [i["num_chs"] for i in m.feature_info] == [64, 128, 128, 512, 256]
    m1 = zoo.create("simplenet_9m_m1")
    assert [i["num_chs"] for i in m1.feature_info] == [128, 192, 192, 640, 320]


def test_smallest_input():
    m = zoo.create("simplenet_small_m2_05").eval()
    assert m.min_input_size == 25
    with torch.no_grad():
        assert m(torch.randn(1, 3, 25, 25)).shape == (1, 1000)
    with pytest.raises(ValueError, match="at least 25"):
        m(torch.randn(1, 3, 24, 24))


def test_filter_rejects_other_layouts(tmp_path):
    timm_like = {"stem.conv.weight": torch.zeros(1), "head.fc.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match="not a SimpleNetV1"):
        filter_simplenet(timm_like, None)
    f = tmp_path / "other.pth"
    torch.save(timm_like, f)
    with pytest.raises(CheckpointError, match="simplenet_5m_m1"):
        zoo.create("simplenet_5m_m1", checkpoint_path=f)


def test_cards_point_at_the_authors_release():
    for name in VARIANTS:
        cfg = zoo.info(name)["pretrained"]["in1k"]
        assert cfg["url"].startswith("https://github.com/Coderx7/SimpleNet_Pytorch/releases/download/v1.0.0/")
        assert cfg["url"].split("/")[-1].startswith(name.replace("simplenet_", "simplenetv1_") + "-")
        assert cfg["filter_fn"].endswith("filter_simplenet")
