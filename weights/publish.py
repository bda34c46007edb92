"""Hub folders: ``zoo export-hub`` writes one, ``zoo push`` uploads it with ``HfApi.upload_folder``.

A folder holds ``model.safetensors`` (our state dict), ``config.json`` (architecture, model
args, pretrained cfg) and ``README.md`` (a model card with YAML front matter). Every file is
written atomically. ``zoo.create("local-dir:DIR")`` / ``zoo.create("hf-hub:org/repo")`` read it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.cost import count_gmacs, count_params
from zoo.factory import HUB_CONFIG, HUB_WEIGHTS
from zoo.hub import atomic_write, save_safetensors, sha256_file
from zoo.registry import get_entry

__all__ = ["export_hub", "push_to_hub", "model_card"]

# Hugging Face licence identifiers for the licences our cfgs name.
_HF_LICENSES = {"apache-2.0": "apache-2.0", "mit": "mit", "bsd-3-clause": "bsd-3-clause", "cc-by-nc-4.0": "cc-by-nc-4.0"}
_PIPELINE = {"sr": "image-to-image", "isp": "image-to-image", "classification": "image-classification",
             "segmentation": "mask-generation", "audio_codec": "audio-to-audio", "vae": "image-to-image",
             "image_codec": "image-to-image"}


def _yaml_list(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items)


def model_card(config: dict[str, Any], repo_id: str | None = None) -> str:
    """README.md for a hub folder, from its config.json contents."""
    entry = get_entry(config["architecture"])
    cfg = config.get("pretrained_cfg") or {}
    lic = (cfg.get("license") or entry.license or "other").lower()
    tags = ["zoo", entry.task, entry.family, "pytorch"]
    ref = f"hf-hub:{repo_id}" if repo_id else "local-dir:/path/to/this/folder"
    metrics = cfg.get("metrics") or {}
    front = [
        "---",
        f"license: {_HF_LICENSES.get(lic, 'other')}",
        "library_name: zoo",
        f"pipeline_tag: {_PIPELINE.get(entry.task, 'other')}",
        "tags:",
        _yaml_list(tags),
    ]
    if lic not in _HF_LICENSES:
        front.append(f"license_name: {lic}")
    front.append("---")
    lines = [
        "\n".join(front),
        "",
        f"# {entry.name}",
        "",
        entry.description or "",
        "",
        f"- **Task:** {entry.task}",
        f"- **Family:** {entry.family}",
        f"- **Paper:** {entry.paper}" + (f" ([arXiv:{entry.arxiv}](https://arxiv.org/abs/{entry.arxiv}))" if entry.arxiv else ""),
        f"- **Authors' code:** {entry.source}" if entry.source else "",
        f"- **Licence:** {cfg.get('license') or entry.license}",
        f"- **Params:** {config['params']:,}",
        f"- **GMACs:** {config['gmacs']:.4f} at input {tuple(entry.input_size)}",
        f"- **Input:** {tuple(entry.input_size)} values in {list(entry.input_range)}",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("No metrics were measured for these weights.")
    src = cfg.get("description") or ""
    lines += [
        "",
        "## Weights",
        "",
        (src + ". ") if src else "",
        f"Converted from the upstream file {cfg.get('url') or cfg.get('file') or ''} "
        f"(sha256 `{cfg.get('upstream_sha256') or 'unknown'}`)." if cfg.get("upstream_sha256") else "",
        "",
        "## Usage",
        "",
        "```python",
        "import zoo",
        f'model = zoo.create("{ref}").eval()',
        "```",
        "",
        "```bash",
        f"zoo info {entry.name}",
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def export_hub(
    name: str,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    repo_id: str | None = None,
    model: torch.nn.Module | None = None,
    **model_args: Any,
) -> Path:
    """Write a hub folder for ``name`` with weights from ``checkpoint`` (an upstream or zoo file),
    the cfg's pretrained weights, or the given ``model``."""
    entry = get_entry(name)
    if model is None:
        model = zoo.create(name, pretrained=pretrained, checkpoint_path=checkpoint, **model_args)
    model = model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors(model.state_dict(), out / HUB_WEIGHTS, metadata={"format": "pt", "architecture": entry.name})
    base = dict(getattr(model, "pretrained_cfg", {}) or {})
    upstream_sha = None
    if checkpoint is not None:
        upstream_sha = sha256_file(checkpoint)
    elif base.get("source", "") and str(base.get("source")).startswith("file:"):
        upstream_sha = base.get("sha256")
    cfg = {
        "tag": base.get("tag"),
        "license": base.get("license") or entry.license,
        "metrics": base.get("metrics") or {},
        "description": base.get("description") or "",
        "url": base.get("url"),
        "upstream_sha256": upstream_sha,
        "hf_hub_id": repo_id,
        "hf_filename": HUB_WEIGHTS,
        "sha256": sha256_file(weights),
        "filter_fn": None,  # our own layout: no conversion
    }
    config = {
        "architecture": entry.name,
        "model_args": dict(getattr(model, "zoo_args", {}) or {}),
        "task": entry.task,
        "input_size": list(entry.input_size),
        "params": count_params(model),
        "gmacs": round(count_gmacs(model, entry.input_size), 4),
        "pretrained_cfg": cfg,
        "library_name": "zoo",
        "zoo_version": zoo.__version__,
    }
    _write_text(out / HUB_CONFIG, json.dumps(config, indent=2) + "\n")
    _write_text(out / "README.md", model_card(config, repo_id))
    return out


def push_to_hub(
    name: str,
    repo_id: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    **model_args: Any,
) -> str:
    """Export a hub folder to a temporary directory and upload it; returns the commit url."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = export_hub(name, tmp, checkpoint=checkpoint, pretrained=pretrained, repo_id=repo_id, **model_args)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message or f"Upload {name} with zoo"
        )
    return str(getattr(info, "commit_url", info))
