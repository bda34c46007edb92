"""Pretrained weight cfgs: where one weight file comes from and how it maps to our state dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = ["PretrainedCfg"]

StateDict = dict[str, Any]
FilterFn = Callable[[StateDict, Any], StateDict]


@dataclass(frozen=True)
class PretrainedCfg:
    """One weight file for one architecture.

    Sources, tried in the order of DESIGN.md after an explicit ``checkpoint_path``: the local
    cache (by file name, checked against ``sha256``), the Hugging Face hub (``hf_hub_id`` +
    ``hf_filename``), then ``url``. ``file`` names a local file (absolute or relative to
    ``ZOO_WEIGHTS_DIR``). Only real, published sources are listed; ``verified`` says whether
    ``sha256`` was computed here from the published file.
    """

    tag: str
    url: str | None = None
    hf_hub_id: str | None = None
    hf_filename: str | None = None
    file: str | None = None
    filename: str | None = None  # name in the local cache; defaults to the url's last part
    archive_member: str | None = None  # the url is a zip archive: this member is the weight file
    sha256: str | None = None
    verified: bool = False
    license: str = ""
    filter_fn: FilterFn | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)  # e.g. deploy form for a deploy file
    data_cfg: dict[str, Any] = field(default_factory=dict)  # preprocessing these weights expect (timm names)
    description: str = ""

    @property
    def has_source(self) -> bool:
        return bool(self.url or self.hf_hub_id or self.file)

    @property
    def cache_filename(self) -> str:
        if self.filename:
            return self.filename
        for src in (self.url, self.hf_filename, self.file):
            if src:
                return src.rstrip("/").split("/")[-1].split("?")[0]
        return f"{self.tag}.safetensors"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        fn = self.filter_fn
        d["filter_fn"] = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else None
        return d
