"""RAE: the authors' decoder file layout (key list of the published ``ViTXL_n08/model.pt``), the
Hugging Face DINOv2-with-registers encoder layout, and the whole autoencoder against independent
float64 transcriptions of the authors' ``GeneralDecoder`` and of Hugging Face's
``Dinov2WithRegistersModel`` forward (separate q/k/v, their LayerNorm epsilons, token order),
at tiny widths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.hub import CheckpointError, save_safetensors
from zoo.models.rae import RAE, sincos_pos_embed_2d
from zoo.registry import get_entry
from zoo.weights.filters_vaed import filter_rae, rae_decoder_to_zoo

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def _authors_decoder_keys(hidden, layers, inter, latent, num_patches, patch) -> dict[str, tuple[int, ...]]:
    """``GeneralDecoder.state_dict()`` (the order of the published ``model.pt``)."""
    keys = {
        "decoder_pos_embed": (1, num_patches + 1, hidden),
        "trainable_cls_token": (1, 1, hidden),
        "decoder_embed.weight": (hidden, latent),
        "decoder_embed.bias": (hidden,),
    }
    for i in range(layers):
        p = f"decoder_layers.{i}."
        for n in ("query", "key", "value"):
            keys[f"{p}attention.attention.{n}.weight"] = (hidden, hidden)
            keys[f"{p}attention.attention.{n}.bias"] = (hidden,)
        keys[f"{p}attention.output.dense.weight"] = (hidden, hidden)
        keys[f"{p}attention.output.dense.bias"] = (hidden,)
        keys[f"{p}intermediate.dense.weight"] = (inter, hidden)
        keys[f"{p}intermediate.dense.bias"] = (inter,)
        keys[f"{p}output.dense.weight"] = (hidden, inter)
        keys[f"{p}output.dense.bias"] = (hidden,)
        for n in ("layernorm_before", "layernorm_after"):
            keys[f"{p}{n}.weight"] = (hidden,)
            keys[f"{p}{n}.bias"] = (hidden,)
    keys.update({"decoder_norm.weight": (hidden,), "decoder_norm.bias": (hidden,),
                 "decoder_pred.weight": (patch * patch * 3, hidden), "decoder_pred.bias": (patch * patch * 3,)})
    return keys


def _hf_dinov2_keys(dim, depth, grid0) -> dict[str, tuple[int, ...]]:
    """``Dinov2WithRegistersModel.state_dict()`` (``facebook/dinov2-with-registers-*``)."""
    keys = {
        "embeddings.cls_token": (1, 1, dim),
        "embeddings.mask_token": (1, dim),
        "embeddings.register_tokens": (1, 4, dim),
        "embeddings.position_embeddings": (1, grid0 * grid0 + 1, dim),
        "embeddings.patch_embeddings.projection.weight": (dim, 3, 14, 14),
        "embeddings.patch_embeddings.projection.bias": (dim,),
    }
    for i in range(depth):
        p = f"encoder.layer.{i}."
        for n in ("norm1", "norm2"):
            keys[f"{p}{n}.weight"], keys[f"{p}{n}.bias"] = (dim,), (dim,)
        for n in ("query", "key", "value"):
            keys[f"{p}attention.attention.{n}.weight"], keys[f"{p}attention.attention.{n}.bias"] = (dim, dim), (dim,)
        keys[f"{p}attention.output.dense.weight"], keys[f"{p}attention.output.dense.bias"] = (dim, dim), (dim,)
        keys[f"{p}layer_scale1.lambda1"], keys[f"{p}layer_scale2.lambda1"] = (dim,), (dim,)
        keys[f"{p}mlp.fc1.weight"], keys[f"{p}mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
        keys[f"{p}mlp.fc2.weight"], keys[f"{p}mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
    keys["layernorm.weight"], keys["layernorm.bias"] = (dim,), (dim,)
    return keys


def _fill(keys, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in keys.items():
        t = torch.randn(shape, generator=g)
        if k.endswith(("norm1.weight", "norm2.weight", "layernorm_before.weight", "layernorm_after.weight", "decoder_norm.weight")):
            t = 1 + 0.1 * t
        elif "lambda1" in k:
            t = 0.5 + 0.1 * t
        elif len(shape) >= 2 and "embed" not in k and "token" not in k:
            t = t / math.sqrt(math.prod(shape[1:]))
        elif len(shape) == 1:
            t = 0.1 * t
        out[k] = t
    return out


# ----------------------------------------------------------------------------------------------
# independent float64 references
# ----------------------------------------------------------------------------------------------


def _mha(h, sd, p, heads, names=("query", "key", "value"), out="attention.output.dense"):
    b, n, d = h.shape
    q, k, v = (F.linear(h, sd[f"{p}attention.attention.{m}.weight"], sd[f"{p}attention.attention.{m}.bias"])
               .view(b, n, heads, d // heads).transpose(1, 2) for m in names)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1) @ v
    a = a.transpose(1, 2).reshape(b, n, d)
    return F.linear(a, sd[f"{p}{out}.weight"], sd[f"{p}{out}.bias"])


def _ref_dinov2(sd, x, depth, heads, grid):
    """Hugging Face ``Dinov2WithRegistersModel`` + the authors' non-affine final LayerNorm, patch tokens."""
    dim = sd["embeddings.cls_token"].shape[-1]
    e = F.conv2d(x, sd["embeddings.patch_embeddings.projection.weight"], sd["embeddings.patch_embeddings.projection.bias"], stride=14)
    e = e.flatten(2).transpose(1, 2)
    e = torch.cat([sd["embeddings.cls_token"].expand(x.shape[0], -1, -1), e], 1)
    pos = sd["embeddings.position_embeddings"]
    g0 = math.isqrt(pos.shape[1] - 1)
    pp = pos[:, 1:].reshape(1, g0, g0, dim).permute(0, 3, 1, 2)
    pp = F.interpolate(pp.float(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=True).to(pos.dtype)
    e = e + torch.cat([pos[:, :1], pp.permute(0, 2, 3, 1).reshape(1, -1, dim)], 1)
    e = torch.cat([e[:, :1], sd["embeddings.register_tokens"].expand(x.shape[0], -1, -1), e[:, 1:]], 1)
    for i in range(depth):
        p = f"encoder.layer.{i}."
        h = F.layer_norm(e, (dim,), sd[f"{p}norm1.weight"], sd[f"{p}norm1.bias"], 1e-6)
        e = e + sd[f"{p}layer_scale1.lambda1"] * _mha(h, sd, p, heads)
        h = F.layer_norm(e, (dim,), sd[f"{p}norm2.weight"], sd[f"{p}norm2.bias"], 1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[f"{p}mlp.fc1.weight"], sd[f"{p}mlp.fc1.bias"])), sd[f"{p}mlp.fc2.weight"], sd[f"{p}mlp.fc2.bias"])
        e = e + sd[f"{p}layer_scale2.lambda1"] * h
    e = F.layer_norm(e, (dim,), None, None, 1e-6)
    return e[:, 5:]


def _ref_decoder(sd, tokens, layers, heads, patch):
    """The authors' ``GeneralDecoder.forward(drop_cls_token=False)`` + ``unpatchify`` + de-normalisation."""
    hidden = sd["decoder_embed.weight"].shape[0]
    x = F.linear(tokens, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    x = torch.cat([sd["trainable_cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd["decoder_pos_embed"]
    for i in range(layers):
        p = f"decoder_layers.{i}."
        h = F.layer_norm(x, (hidden,), sd[f"{p}layernorm_before.weight"], sd[f"{p}layernorm_before.bias"], 1e-12)
        x = x + _mha(h, sd, p, heads)
        h = F.layer_norm(x, (hidden,), sd[f"{p}layernorm_after.weight"], sd[f"{p}layernorm_after.bias"], 1e-12)
        h = F.gelu(F.linear(h, sd[f"{p}intermediate.dense.weight"], sd[f"{p}intermediate.dense.bias"]))
        x = x + F.linear(h, sd[f"{p}output.dense.weight"], sd[f"{p}output.dense.bias"])
    x = F.layer_norm(x, (hidden,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], 1e-12)
    logits = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]
    b, n, _ = logits.shape
    g = math.isqrt(n)
    img = torch.einsum("nhwpqc->nchpwq", logits.reshape(b, g, g, patch, patch, 3)).reshape(b, 3, g * patch, g * patch)
    return img * STD + MEAN


# ----------------------------------------------------------------------------------------------
# tiny RAE built from the authors' files
# ----------------------------------------------------------------------------------------------

ENC = dict(depth=2, embed_dim=32, num_heads=2)
DEC = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48)
TINY = dict(encoder_kwargs=ENC, encoder_input_size=56, decoder=DEC, decoder_patch_size=4)  # 4x4 tokens -> 16x16 image


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rae")
    enc = _fill(_hf_dinov2_keys(32, 2, grid0=6), seed=1)  # a 6x6 position grid, resampled to the 4x4 one
    dec = _fill(_authors_decoder_keys(32, 2, 48, latent=32, num_patches=16, patch=4), seed=2)
    dec["decoder_pos_embed"] = 0.5 * torch.randn(dec["decoder_pos_embed"].shape, generator=torch.Generator().manual_seed(3))
    torch.save(dec, d / "model.pt")
    save_safetensors(enc, d / "model.safetensors")
    return enc, dec, d / "model.safetensors", d / "model.pt"


def test_whole_autoencoder_matches_the_authors_forward(authors_files):
    enc, dec, enc_file, dec_file = authors_files
    model = zoo.create("rae_dinov2_b", checkpoint_path=dec_file, encoder_path=enc_file, **TINY).double().eval()
    x = torch.rand(2, 3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    encd = {k: v.double() for k, v in enc.items()}
    decd = {k: v.double() for k, v in dec.items()}
    xr = F.interpolate(x, size=(56, 56), mode="bicubic", align_corners=False)
    ref_tokens = _ref_dinov2(encd, (xr - MEAN) / STD, depth=2, heads=2, grid=4)
    ref_image = _ref_decoder(decd, ref_tokens, layers=2, heads=4, patch=4)
    with torch.no_grad():
        tokens = model.encode(x)
        image = model.decode(ref_tokens)
        recon = model(x)
    assert tokens.shape == (2, 16, 32) and image.shape == (2, 3, 16, 16)
    # the weights are float32 (as loaded); the only float32 rounding left in the float64 run is the
    # class token + its position embedding, which the conversion to timm's layout sums once
    assert (tokens - ref_tokens).abs().max().item() < 1e-6
    assert (image - ref_image).abs().max().item() < 1e-10
    assert (recon - ref_image).abs().max().item() < 1e-5
    # the authors' 2D latent grid (B, C, h, w) decodes the same
    grid = ref_tokens.transpose(1, 2).reshape(2, 32, 4, 4)
    with torch.no_grad():
        assert torch.allclose(model.decode(grid), image, atol=1e-12)
    assert ref_image.std() > 1e-2


def test_decoder_file_keys_are_all_consumed(authors_files):
    _, dec, _, _ = authors_files
    model = RAE(**TINY)
    model.encoder_loaded = True  # as after encoder_path= / pretrained encoder
    out = filter_rae(dec, model)
    assert out.keys() == model.state_dict().keys()
    assert sum(v.numel() for k, v in out.items() if k.startswith("decoder.")) == sum(v.numel() for v in dec.values())


def test_missing_encoder_weights_are_fetched_or_a_clear_error(authors_files, monkeypatch, tmp_path):
    _, _, _, dec_file = authors_files

    def offline(self, pretrained):
        if pretrained:
            raise RuntimeError("no network")
        return orig(self, pretrained)

    orig = RAE._make_encoder
    monkeypatch.setattr(RAE, "_make_encoder", offline)
    with pytest.raises(CheckpointError, match="holds no encoder"):
        zoo.create("rae_dinov2_b", checkpoint_path=dec_file, **TINY)


def test_timm_layout_encoder_file_loads(authors_files, tmp_path):
    _, _, enc_file, _ = authors_files
    a = RAE(encoder_path=enc_file, **TINY).eval()
    f = save_safetensors(a.encoder.state_dict(), tmp_path / "timm.safetensors")
    torch.manual_seed(5)
    b = RAE(encoder_path=f, **TINY).eval()
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(a.encode(x), b.encode(x))


# ----------------------------------------------------------------------------------------------
# the published configuration
# ----------------------------------------------------------------------------------------------


def test_published_decoder_layout_and_params():
    up = _authors_decoder_keys(1152, 28, 4096, latent=768, num_patches=256, patch=16)
    assert len(up) == 456  # the published ViTXL_n08/model.pt holds 456 tensors
    with torch.device("meta"):
        model = RAE()
        converted = rae_decoder_to_zoo({k: torch.empty(s) for k, s in up.items()})
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("decoder.")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    n_dec = sum(math.prod(s) for s in up.values())
    assert sum(p.numel() for p in model.decoder.parameters()) == n_dec == 415_352_704
    assert sum(p.numel() for p in model.parameters()) == get_entry("rae_dinov2_b").params
    assert model.latent_channels == 768 and model.num_patches == 256 and model.image_size == 256


def test_512_decoder_shape():
    cfg = get_entry("rae_dinov2_b").get_cfg("in1k_i512")
    with torch.device("meta"):
        model = RAE(**cfg.model_args)
    assert model.num_patches == 1024 and model.image_size == 512
    assert tuple(model.decoder.decoder_pos_embed.shape) == (1, 1025, 1152)


def test_sincos_position_embedding():
    dim, grid = 16, 3
    pe = sincos_pos_embed_2d(dim, grid)[0].double()
    assert pe.shape == (grid * grid + 1, dim) and torch.equal(pe[0], torch.zeros(dim))
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    for h in range(grid):
        for w in range(grid):
            row = pe[1 + h * grid + w]
            want = torch.cat([torch.sin(w * omega), torch.cos(w * omega), torch.sin(h * omega), torch.cos(h * omega)])
            assert torch.allclose(row, want, atol=1e-6)
    assert torch.allclose(RAE(**TINY).decoder.decoder_pos_embed, sincos_pos_embed_2d(32, 4))


# ----------------------------------------------------------------------------------------------
# behaviour
# ----------------------------------------------------------------------------------------------


def test_latent_noise_only_in_training():
    model = RAE(noise_tau=0.8, **TINY)
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        clean = model.eval().encode(x)
        noisy = model.train().encode(x)
        assert not torch.allclose(clean, noisy)
        model.noise_tau = 0.0
        assert torch.equal(model.encode(x), clean)
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_token_grid_is_resized_to_the_decoders():
    model = RAE(**TINY).eval()
    with torch.no_grad():
        y = model.decode(torch.randn(1, 9, 32))  # 3x3 tokens into a 4x4 decoder
    assert y.shape == (1, 3, 16, 16)


def test_bad_input_gets_clear_errors():
    model = RAE(**TINY).eval()
    with pytest.raises(ValueError, match="expected 3 channels"):
        model.encode(torch.rand(1, 4, 56, 56))
    with pytest.raises(ValueError, match="expected values in"):
        model(torch.rand(1, 3, 56, 56) * 255)
    with pytest.raises(ValueError, match="expected 32 channels"):
        model.decode(torch.randn(1, 16, 31))
    with pytest.raises(ValueError, match="square number of tokens"):
        model.decode(torch.randn(1, 15, 32))
    with pytest.raises(ValueError, match="3-D"):
        model.decode(torch.randn(16, 32))
