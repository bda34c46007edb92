"""ReXNet: the authors' (clovaai/rexnet) checkpoints through ``filter_rexnet`` into timm's RexNet.

The reference below is the authors' ``ReXNetV1`` written from reading their ``rexnetv1.py``
(module for module, so its state dict has their exact key names and shapes): stem
``ConvBNSwish`` in ``features.0-2``, one ``LinearBottleneck`` per layer with a single ``out``
sequence (``[1x1 conv, BN, Swish]`` when t != 1, depthwise conv, BN, ``[SE(fc = conv, BN, ReLU,
conv, Sigmoid)]``, ReLU6, 1x1 conv, BN) and the residual added to the first ``in_channels``
channels, then a 1x1 ``ConvBNSwish`` to ``int(1280 * width)``, average pool, and ``output`` =
Dropout + 1x1 conv with bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.hub import CheckpointError
from zoo.weights.filters_rexnet import filter_rexnet


def _conv_bn(out: list, cin: int, cout: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
    out.append(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False))
    out.append(nn.BatchNorm2d(cout))


class _SE(nn.Module):
    def __init__(self, in_channels: int, channels: int, se_ratio: int = 12):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(in_channels, channels // se_ratio, kernel_size=1, padding=0),
            nn.BatchNorm2d(channels // se_ratio),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // se_ratio, channels, kernel_size=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.fc(self.avg_pool(x))


class _LinearBottleneck(nn.Module):
    def __init__(self, in_channels: int, channels: int, t: int, stride: int, use_se: bool):
        super().__init__()
        self.use_shortcut = stride == 1 and in_channels <= channels
        self.in_channels = in_channels
        out: list[nn.Module] = []
        if t != 1:
            dw = in_channels * t
            _conv_bn(out, in_channels, dw)
            out.append(nn.SiLU())
        else:
            dw = in_channels
        _conv_bn(out, dw, dw, kernel=3, stride=stride, pad=1, groups=dw)
        if use_se:
            out.append(_SE(dw, dw, 12))
        out.append(nn.ReLU6())
        _conv_bn(out, dw, channels)
        self.out = nn.Sequential(*out)

    def forward(self, x):
        out = self.out(x)
        if self.use_shortcut:
            out[:, 0 : self.in_channels] += x
        return out


class AuthorsReXNetV1(nn.Module):
    def __init__(self, width_mult: float = 1.0, input_ch: int = 16, final_ch: int = 180, classes: int = 1000):
        super().__init__()
        layers = [1, 2, 2, 3, 3, 5]
        strides = [1, 2, 2, 2, 1, 2]
        use_ses = [False, False, True, True, True, True]
        strides = sum([[s] + [1] * (layers[i] - 1) for i, s in enumerate(strides)], [])
        use_ses = sum([[u] * layers[i] for i, u in enumerate(use_ses)], [])
        ts = [1] * layers[0] + [6] * sum(layers[1:])
        depth = sum(layers) * 3
        stem = 32 / width_mult if width_mult < 1.0 else 32
        inplanes = input_ch / width_mult if width_mult < 1.0 else input_ch
        in_chs, out_chs = [], []
        for i in range(depth // 3):
            if i == 0:
                in_chs.append(int(round(stem * width_mult)))
                out_chs.append(int(round(inplanes * width_mult)))
            else:
                in_chs.append(int(round(inplanes * width_mult)))
                inplanes += final_ch / (depth // 3 * 1.0)
                out_chs.append(int(round(inplanes * width_mult)))
        features: list[nn.Module] = []
        _conv_bn(features, 3, int(round(stem * width_mult)), kernel=3, stride=2, pad=1)
        features.append(nn.SiLU())
        for cin, c, t, s, se in zip(in_chs, out_chs, ts, strides, use_ses):
            features.append(_LinearBottleneck(cin, c, t, s, se))
        pen = int(1280 * width_mult)
        _conv_bn(features, c, pen)
        features.append(nn.SiLU())
        features.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*features)
        self.output = nn.Sequential(nn.Dropout(0.2), nn.Conv2d(pen, classes, 1, bias=True))

    def forward(self, x):
        return self.output(self.features(x)).flatten(1)


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


@pytest.mark.parametrize("name,width", [("rexnet_100", 1.0), ("rexnet_150", 1.5)])
def test_every_authors_key_maps_with_its_shape(name, width):
    with torch.device("meta"):  # shapes only
        theirs = AuthorsReXNetV1(width).state_dict()
    ours = zoo.create(name).state_dict()
    mapped = filter_rexnet(theirs, None)
    assert len(mapped) == len(theirs), "the mapping is one to one"
    assert set(mapped) == set(ours), (sorted(set(ours) - set(mapped))[:5], sorted(set(mapped) - set(ours))[:5])
    bad = {k: (tuple(mapped[k].shape), tuple(ours[k].shape)) for k in ours if mapped[k].shape != ours[k].shape}
    assert not bad, list(bad.items())[:5]
    n_params = sum(v.numel() for k, v in theirs.items() if "running" not in k and "num_batches" not in k)
    assert n_params == zoo.info(name)["params"]


def test_authors_file_gives_the_authors_outputs(tmp_path):
    ref = AuthorsReXNetV1(1.0).eval()
    sd = _randomise(ref, seed=3)
    f = tmp_path / "rexnetv1_1.0x.pth"
    torch.save(sd, f)
    ours = zoo.create("rexnet_100.paper", checkpoint_path=f).eval()
    assert ours.pretrained_cfg["interpolation"] == "bilinear"  # the authors' eval transform
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want_map, got_map = ref.features[:-1](x), ours.forward_features(x)
        want = ref.output(ref.features[-1](want_map)).flatten(1)  # the rest of the authors' forward
        got = ours.forward_head(got_map)
        torch.testing.assert_close(ours(x), got, rtol=0, atol=0)
    # the outputs depend on the input, not only on biases and BatchNorm shifts
    assert (want[0] - want[1]).abs().max() > 0.1 * want.abs().max()
    torch.testing.assert_close(got_map, want_map, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_timm_layout_passes_through_and_foreign_files_are_refused(tmp_path):
    timm_sd = zoo.create("rexnet_100").state_dict()
    assert filter_rexnet(timm_sd, None).keys() == timm_sd.keys()
    with pytest.raises(KeyError, match="not a clovaai ReXNetV1"):
        filter_rexnet({"conv.weight": torch.zeros(1)}, None)
    theirs = AuthorsReXNetV1(1.5).state_dict()  # the 1.5x file into the 1.0x model
    f = tmp_path / "rexnetv1_1.5x.pth"
    torch.save(theirs, f)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        zoo.create("rexnet_100.paper", checkpoint_path=f)


def test_authors_cfgs():
    for name, file in (("rexnet_100", "rexnetv1_1.0x.pth"), ("rexnet_150", "rexnetv1_1.5x.pth")):
        cfg = zoo.info(name)["pretrained"]["paper"]
        assert cfg["url"].startswith("https://drive.google.com/")
        assert cfg["filename"] == file
        assert cfg["filter_fn"].endswith("filter_rexnet")
        assert cfg["verified"] is False and cfg["sha256"] is None
        # timm's weights stay the default
        assert zoo.info(name)["pretrained"].keys() >= {"nav_in1k", "paper"}
        assert next(iter(zoo.info(name)["pretrained"])) == "nav_in1k"


def test_other_widths_map_too():
    """The authors' 0.9x (no registered zoo model): block layouts come from the file, no variant table."""
    import timm

    with torch.device("meta"):  # shapes only
        theirs = AuthorsReXNetV1(0.9).state_dict()
        ours = timm.create_model("rexnet_100", width_mult=0.9, pretrained=False).state_dict()
    mapped = filter_rexnet(theirs, None)
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
