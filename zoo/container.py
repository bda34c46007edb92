"""The zoo's compressed-file container (``.zic`` images; the audio codecs use the same framing).

Layout, all integers big-endian::

    magic      4 bytes   b"ZIC1" (images) / b"ZAC1" (audio)
    version    u8        FORMAT_VERSION
    header     u32 length + UTF-8 JSON (model name, quality, sizes, latent shape ...)
    groups     u8 count, then per group: u16 string count, then per string: u32 length + bytes
    crc32      u32       of everything before it

A file that is cut short, has another magic, a newer version or a wrong checksum raises
:class:`ContainerError` (a ``ValueError``) saying which.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

__all__ = ["ContainerError", "pack", "unpack", "FORMAT_VERSION", "IMAGE_MAGIC", "AUDIO_MAGIC"]

FORMAT_VERSION = 1
IMAGE_MAGIC = b"ZIC1"
AUDIO_MAGIC = b"ZAC1"


class ContainerError(ValueError):
    pass


def pack(magic: bytes, header: dict[str, Any], groups: list[list[bytes]]) -> bytes:
    if len(magic) != 4:
        raise ValueError("magic must be 4 bytes")
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    out = bytearray(magic)
    out += struct.pack(">BI", FORMAT_VERSION, len(head)) + head
    out += struct.pack(">B", len(groups))
    for group in groups:
        out += struct.pack(">H", len(group))
        for s in group:
            out += struct.pack(">I", len(s)) + s
    out += struct.pack(">I", zlib.crc32(bytes(out)))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ContainerError(f"{self.what}: truncated file ({len(self.data)} bytes, needed {self.pos + n})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def unpack(data: bytes, magic: bytes, what: str = "compressed file") -> tuple[dict[str, Any], list[list[bytes]]]:
    r = _Reader(data, what)
    got = r.take(4)
    if got != magic:
        raise ContainerError(f"{what}: not a zoo {magic[:3].decode()} file (magic {got!r}, expected {magic!r})")
    version, head_len = r.unpack(">BI")
    if version > FORMAT_VERSION:
        raise ContainerError(f"{what}: format version {version} is newer than this zoo's ({FORMAT_VERSION}); upgrade zoo")
    try:
        header = json.loads(r.take(head_len).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ContainerError(f"{what}: corrupt header ({e})") from None
    groups: list[list[bytes]] = []
    (n_groups,) = r.unpack(">B")
    for _ in range(n_groups):
        (n,) = r.unpack(">H")
        group = []
        for _ in range(n):
            (length,) = r.unpack(">I")
            group.append(r.take(length))
        groups.append(group)
    body_end = r.pos
    (crc,) = r.unpack(">I")
    if crc != zlib.crc32(data[:body_end]):
        raise ContainerError(f"{what}: checksum mismatch (the file is corrupt)")
    if r.pos != len(data):
        raise ContainerError(f"{what}: {len(data) - r.pos} trailing bytes after the checksum")
    return header, groups
