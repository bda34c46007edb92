"""DAC against the authors' package (descript-audio-codec, module ``dac``): state-dict layout,
random-weight parity of codes and decoded audio, variable bitrate, weight-file filter, bad input.

``dac`` imports ``audiotools`` (not installable beside onnx); a stub module stands in for it
while ``dac`` is imported and sys.modules is restored afterwards."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn
from zoo.models.dac import DAC, DAC_CONFIGS, filter_dac

import zoo
from zoo.cost import count_params
from zoo.registry import get_entry

# Numeric parity runs at narrow widths (every layer, rate, codebook count and codebook size of
# the published configs, fewer channels) so the file stays fast on a shared CPU; the full
# configurations are compared on the meta device (layout, params) and once numerically (slow).
NARROW = dict(encoder_dim=8, decoder_dim=96)
# input lengths: 16 kHz a multiple of the hop (the authors decode 8 samples short), others not (padding)
CASES = [("16khz", 1600), ("24khz", 1400), ("44khz", 2100), ("44khz_16kbps", 1600)]


def _audiotools_stub() -> types.ModuleType:
    mod = types.ModuleType("audiotools")
    ml = types.ModuleType("audiotools.ml")

    class BaseModel(nn.Module):
        INTERN: list = []
        EXTERN: list = []

    class _Placeholder:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("audiotools stub: not available in tests")

    ml.BaseModel = BaseModel
    ml.Accelerator = _Placeholder
    mod.ml = ml
    mod.AudioSignal = _Placeholder
    mod.STFTParams = _Placeholder
    return mod


def _stubbed_or_authors(name: str) -> bool:
    return name in ("audiotools", "dac") or name.startswith(("audiotools.", "dac."))


@pytest.fixture(scope="module")
def authors_dac():
    """The authors' ``dac.model.dac`` module, imported with a stub ``audiotools``."""
    saved = {k: v for k, v in sys.modules.items() if _stubbed_or_authors(k)}
    stub = _audiotools_stub()
    sys.modules["audiotools"] = stub
    sys.modules["audiotools.ml"] = stub.ml
    try:
        import dac.model.dac as upstream
    except ImportError as e:  # pragma: no cover - the test extra installs it
        pytest.skip(f"descript-audio-codec not importable: {e}")
    # dac's Snake is TorchScript; skip the profiling executor's slow first-call optimisation
    with torch.jit.optimized_execution(False):
        yield upstream
    for k in [k for k in sys.modules if _stubbed_or_authors(k)]:
        del sys.modules[k]
    sys.modules.update(saved)


def _kwargs(key: str, narrow: bool) -> dict:
    return {**DAC_CONFIGS[key], **(NARROW if narrow else {})}


def _authors_kwargs(key: str, narrow: bool = False) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _kwargs(key, narrow).items()}


def _randomised(sd: dict, seed: int) -> dict:
    """Seeded random tensors of the shapes of ``sd`` (which may be on the meta device), of a
    sensible scale: Snake alphas in [0.5, 1.5], non-zero biases, weight-norm magnitudes in
    [0.3, 0.9] (about the default init's), Gaussian directions and codebooks."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("alpha"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("bias"):
            out[k] = 0.05 * torch.randn(v.shape, generator=g)
        elif k.endswith("weight_g"):
            out[k] = 0.3 + 0.6 * torch.rand(v.shape, generator=g)
        else:
            out[k] = torch.randn(v.shape, generator=g)
    return out


def _pair(authors_dac, key: str, narrow: bool = True):
    torch.manual_seed(0)
    ref = authors_dac.DAC(**_authors_kwargs(key, narrow)).eval()
    sd = _randomised(ref.state_dict(), seed=1)
    ref.load_state_dict(sd, strict=True)
    ours = DAC(**_kwargs(key, narrow)).eval()
    ours.load_state_dict(sd, strict=True)
    return ref, ours


@pytest.mark.parametrize("key", list(DAC_CONFIGS))
def test_state_dict_layout_and_card_match_authors(authors_dac, key):
    """Full published configurations (built on the meta device: shapes only)."""
    with torch.device("meta"):
        ref = authors_dac.DAC(**_authors_kwargs(key))
        ours = zoo.create(f"dac_{key}")
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs)
    assert mine == theirs
    assert count_params(ours) == count_params(ref) == get_entry(f"dac_{key}").params
    assert (ours.sample_rate, ours.hop_length, ours.n_codebooks, ours.codebook_size, ours.latent_dim) == (
        ref.sample_rate, int(ref.hop_length), ref.n_codebooks, ref.codebook_size, ref.latent_dim)
    assert ours.quantizer.quantizer_dropout == 0.5  # the authors' training setting


@pytest.mark.parametrize("key,length", CASES)
def test_random_weight_parity(authors_dac, key, length):
    _check_parity(*_pair(authors_dac, key), length)


@pytest.mark.slow
def test_random_weight_parity_full_width(authors_dac):
    _check_parity(*_pair(authors_dac, "44khz", narrow=False), 2600)


def _check_parity(ref, ours, length):
    g = torch.Generator().manual_seed(2)
    wav = (0.5 * torch.randn(2, 1, length, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        x = ref.preprocess(wav, ref.sample_rate)
        _, codes_ref, *_ = ref.encode(x)
        audio_ref = ref.decode(ref.quantizer.from_codes(codes_ref)[0])

        codes = ours.encode(wav)
        audio = ours.decode(codes)
        recon = ours(wav)
    assert codes.dtype == torch.long and codes.shape == codes_ref.shape
    assert torch.equal(codes, codes_ref)
    n = audio_ref.shape[-1]  # hop * frames, less 8 for the odd-rate (16 / 24 kHz) decoders
    assert audio.shape[-1] == codes.shape[-1] * ours.hop_length
    assert n == audio.shape[-1] - (8 if 5 in ours.decoder_rates else 0)
    err = (audio[..., :n] - audio_ref).abs().max().item()
    assert err < 1e-4, f"decoded audio differs by {err}"
    assert torch.equal(audio[..., n:], torch.zeros_like(audio[..., n:]))  # zero-padded tail
    assert recon.shape == wav.shape
    m = min(n, length)
    assert (recon[..., :m] - audio_ref[..., :m]).abs().max().item() < 1e-4
    print(f"{type(ours).__name__} hop {ours.hop_length}: codes equal, max |audio err| {err:.2e}")
    assert audio_ref.abs().max() > 1e-2  # a non-trivial signal was compared

    # variable bitrate: the authors' codes for n quantizers, a prefix of the full codes
    for n in (ours.n_codebooks // 2,):
        with torch.no_grad():
            _, codes_n_ref, *_ = ref.encode(x, n_quantizers=n)
            codes_n = ours.encode(wav, n_quantizers=n)
        assert codes_n.shape[1] == n
        assert torch.equal(codes_n, codes_n_ref[:, :n])
        assert torch.equal(codes_n, codes_ref[:, :n])


def test_quantizer_training_parity(authors_dac):
    """Training-mode forward with quantizer dropout: the same seed gives the authors' dropout
    draws, codes, latents and losses."""
    ref, ours = _pair(authors_dac, "16khz")
    ref.quantizer.quantizer_dropout = ours.quantizer.quantizer_dropout = 0.5
    ref.train(), ours.train()
    z = torch.randn(4, ours.latent_dim, 6, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    z_q_ref, codes_ref, _, commit_ref, cb_ref = ref.quantizer(z)
    torch.manual_seed(7)
    out = ours.quantizer(z)
    assert torch.equal(out.codes, codes_ref)
    torch.testing.assert_close(out.z_q, z_q_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.commitment_loss, commit_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.codebook_loss, cb_ref, rtol=1e-5, atol=1e-7)


def test_filter_unwraps_authors_file(authors_dac, tmp_path):
    """A file saved the authors' way ({"state_dict", "metadata": {"kwargs"}}) loads through
    ``zoo.create(..., checkpoint_path=)`` and the pretrained cfg's filter."""
    with torch.device("meta"):
        ref = authors_dac.DAC(**_authors_kwargs("16khz"))
    sd = _randomised(ref.state_dict(), seed=4)
    f = tmp_path / "weights_16khz.pth"
    torch.save({"state_dict": sd, "metadata": {"kwargs": _authors_kwargs("16khz")}}, f)
    m = zoo.create("dac_16khz", checkpoint_path=f)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert filter_dac({"state_dict": sd, "metadata": {}}, m).keys() == sd.keys()
    with pytest.raises(KeyError, match="descript-audio-codec"):
        filter_dac({"encoder.model.0.conv.conv.weight_g": torch.zeros(1)}, m)


def test_pretrained_cfgs_point_at_authors_releases():
    for name, file in [("dac_16khz", "0.0.5/weights_16khz.pth"), ("dac_24khz", "0.0.4/weights_24khz.pth"),
                       ("dac_44khz", "0.0.1/weights.pth"), ("dac_44khz_16kbps", "1.0.0/weights_44khz_16kbps.pth")]:
        cfg = get_entry(name).get_cfg()
        assert cfg.url == f"https://github.com/descriptinc/descript-audio-codec/releases/download/{file}"
        assert cfg.license == "MIT" and cfg.verified is False and cfg.filter_fn is filter_dac


def test_bitrates_and_shapes():
    m = zoo.create("dac_44khz", **NARROW).eval()
    assert m.hop_length == 512 and m.sample_rate == 44100
    assert m.bitrates[-1] == pytest.approx(9 * 10 * 44100 / 512 / 1000)
    wav = torch.rand(1, 1, 1000) * 2 - 1
    codes = m.encode(wav)
    assert codes.shape == (1, 9, 2)  # ceil(1000 / 512) frames
    assert 0 <= int(codes.min()) and int(codes.max()) < m.codebook_size
    assert m.decode(codes).shape == (1, 1, 1024)
    assert m(wav).shape == wav.shape


def test_bad_input():
    m = zoo.create("dac_16khz", **get_entry("dac_16khz").test_args).eval()
    wav = torch.rand(1, 1, 640) * 2 - 1
    with pytest.raises(ValueError, match="3-D"):
        m.encode(wav[0])
    with pytest.raises(ValueError, match="channels"):
        m.encode(wav.repeat(1, 2, 1))
    with pytest.raises(ValueError, match="floating"):
        m.encode((wav * 100).long())
    with pytest.raises(ValueError, match="NaN"):
        m.encode(torch.full_like(wav, float("nan")))
    with pytest.raises(ValueError, match="empty"):
        m.encode(wav[..., :0])
    with pytest.raises(ValueError, match="n_quantizers"):
        m.encode(wav, n_quantizers=m.n_codebooks + 1)
    with pytest.raises(ValueError, match="n_quantizers"):
        m.encode(wav, n_quantizers=0)
    codes = m.encode(wav)
    with pytest.raises(ValueError, match="out of range"):
        m.decode(codes + m.codebook_size)
    with pytest.raises(ValueError, match="codebooks"):
        m.decode(torch.cat([codes, codes], 1))
    with pytest.raises(ValueError, match="integer"):
        m.decode(codes.float())
    with pytest.raises(ValueError, match="codes"):
        m.decode(codes[0])
    with pytest.raises(ValueError, match="must have the same product"):
        DAC(encoder_rates=(2, 4), decoder_rates=(4, 4))
