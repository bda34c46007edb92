"""The zoo's compressed-file container (``.zic`` images; the audio codecs use the same framing).

Layout, all integers big-endian::

    magic      4 bytes   b"ZIC1" (images) / b"ZAC1" (audio)
    version    u8        FORMAT_VERSION
    header     u32 length + UTF-8 JSON (model name, quality, sizes, latent shape ...)
    groups     u8 count, then per group: u16 string count, then per string: u32 length + bytes
    crc32      u32       of everything before it

A file that is cut short, has another magic, a newer version or a wrong checksum raises
:class:`ContainerError` (a ``ValueError``) saying which.

Audio (``.zac``, written by ``AudioCodec.compress``): group 0 holds the codes, bit-packed by
:func:`pack_bits` at ``ceil(log2(codebook_size))`` bits each or range-coded by
:func:`rans_encode_codes`; group 1 (only for codecs with side information) float32 big-endian
values. The header names the model, its weights' fingerprint, the sizes and the coding.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

__all__ = [
    "ContainerError", "pack", "unpack", "FORMAT_VERSION", "IMAGE_MAGIC", "AUDIO_MAGIC",
    "pack_bits", "unpack_bits", "rans_encode_codes", "rans_decode_codes",
]

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


# --------------------------------------------------------------------------- integer codes
# The audio codecs' codes: fixed-width bit packing, and an optional adaptive range coder.


def pack_bits(values, bits: int) -> bytes:
    """Pack non-negative integers into exactly ``bits`` bits each, MSB first (vectorised).

    ``len(result) == ceil(len(values) * bits / 8)``; the last byte is zero-padded.
    """
    import numpy as np

    v = np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"values must lie in [0, {1 << bits}) to pack in {bits} bits, got [{v.min()}, {v.max()}]")
    if bits == 8:
        return v.astype(np.uint8).tobytes()
    if bits == 16:
        return v.astype(">u2").tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bitmat = ((v[:, None] >> shifts) & 1).astype(np.uint8)  # (n, bits), MSB first
    return np.packbits(bitmat.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int):
    """Inverse of :func:`pack_bits`: ``count`` integers (int64 numpy array)."""
    import numpy as np

    need = (count * bits + 7) // 8
    if len(data) != need:
        raise ContainerError(f"code payload has {len(data)} bytes, expected {need} for {count} codes of {bits} bits")
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if bits == 16:
        return np.frombuffer(data, dtype=">u2").astype(np.int64)
    bitmat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits).astype(np.int64)
    return bitmat @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))


# Adaptive arithmetic (rANS) coding of codes through CompressAI's range coder. No table is stored:
# encoder and decoder both start from a uniform distribution per codebook and re-estimate it from
# the codes already coded at block boundaries (blocks of 8, 16, 32 ... up to RANS_MAX_BLOCK frames),
# with integer arithmetic only, so the bitstream is bit-exact across machines.
RANS_PRECISION = 16
RANS_MAX_BLOCK = 256
RANS_MAX_DIGIT = 4096  # a codebook larger than this is coded as two digits, each with its own table


def _digits(codebook_size: int) -> list[tuple[int, int]]:
    """(shift, range) of each digit of a code: one digit up to RANS_MAX_DIGIT symbols, else two."""
    if codebook_size <= RANS_MAX_DIGIT:
        return [(0, codebook_size)]
    bits = max(1, (codebook_size - 1).bit_length())
    lo = (bits + 1) // 2
    return [(lo, -(-codebook_size // (1 << lo))), (0, 1 << lo)]


def _blocks(n_frames: int) -> list[tuple[int, int]]:
    out, start, size = [], 0, 8
    while start < n_frames:
        out.append((start, min(n_frames, start + size)))
        start += size
        size = min(RANS_MAX_BLOCK, start)
    return out


def _cdfs(counts) -> list[list[int]]:
    """Quantised CDFs (K+2 entries, the last symbol is CompressAI's escape) from symbol counts (n, K)."""
    import numpy as np

    n, k = counts.shape
    total = 1 << RANS_PRECISION
    c = 2 * counts.astype(np.int64) + 1  # add-1/2 prior, in integers
    budget = total - (k + 1)  # every symbol and the escape keep at least 1
    freq = 1 + (c * budget) // c.sum(1, keepdims=True)
    rest = total - 1 - freq.sum(1)  # the rounding remainder (the escape symbol keeps exactly 1)
    freq[np.arange(n), freq.argmax(1)] += rest  # goes to the likeliest symbol
    freq = np.concatenate([freq, np.ones((n, 1), np.int64)], 1)
    cdf = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(freq, 1)], 1)
    assert (cdf[:, -1] == total).all()
    return cdf.astype(np.int32).tolist()


def _rans_tables(n_q: int, codebook_size: int):
    import numpy as np

    digits = _digits(codebook_size)
    return digits, [np.zeros((n_q, r), np.int64) for _, r in digits]


def rans_encode_codes(codes, codebook_size: int) -> bytes:
    """Adaptively range-code integer codes ``(..., n_q, frames)`` (frames last); deterministic."""
    import numpy as np
    from compressai.ans import BufferedRansEncoder

    codes = np.asarray(codes, dtype=np.int64)
    lead, (n_q, n_frames) = codes.shape[:-2], codes.shape[-2:]
    c = codes.reshape(-1, n_q, n_frames)  # (B, n_q, F)
    digits, counts = _rans_tables(n_q, codebook_size)
    n_tab = n_q * len(digits)
    enc = BufferedRansEncoder()
    for f0, f1 in _blocks(n_frames):
        cdfs = [row for cnt in counts for row in _cdfs(cnt)]
        sizes = [len(row) for row in cdfs]
        block = c[:, :, f0:f1]  # (B, n_q, f)
        syms, idx = [], []
        for di, (shift, rng) in enumerate(digits):
            d = (block >> shift) % rng if shift else block % rng
            syms.append(d)
            idx.append(np.broadcast_to((di * n_q + np.arange(n_q))[None, :, None], d.shape))
            np.add.at(counts[di], (np.broadcast_to(np.arange(n_q)[None, :, None], d.shape), d), 1)
        # interleave so that every frame's symbols are contiguous: (B, f, digit, n_q)
        s = np.stack(syms, 0).transpose(1, 3, 0, 2).reshape(-1)
        i = np.stack(idx, 0).transpose(1, 3, 0, 2).reshape(-1)
        enc.encode_with_indexes(s.tolist(), i.tolist(), cdfs, sizes, [0] * n_tab)
    return enc.flush()


def rans_decode_codes(data: bytes, shape: tuple[int, ...], codebook_size: int):
    """Inverse of :func:`rans_encode_codes` for codes of ``shape`` (..., n_q, frames)."""
    import numpy as np
    from compressai.ans import RansDecoder

    n_q, n_frames = shape[-2:]
    batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    digits, counts = _rans_tables(n_q, codebook_size)
    n_tab = n_q * len(digits)
    out = np.zeros((batch, n_q, n_frames), np.int64)
    dec = RansDecoder()
    dec.set_stream(data)
    for f0, f1 in _blocks(n_frames):
        cdfs = [row for cnt in counts for row in _cdfs(cnt)]
        sizes = [len(row) for row in cdfs]
        f = f1 - f0
        idx = np.broadcast_to((np.arange(len(digits))[:, None] * n_q + np.arange(n_q)[None])[None, None],
                              (batch, f, len(digits), n_q)).reshape(-1)
        s = np.asarray(dec.decode_stream(idx.tolist(), cdfs, sizes, [0] * n_tab), np.int64)
        s = s.reshape(batch, f, len(digits), n_q).transpose(2, 0, 3, 1)  # (digit, B, n_q, f)
        block = np.zeros((batch, n_q, f), np.int64)
        for di, (shift, rng) in enumerate(digits):
            if (s[di] >= rng).any():
                raise ContainerError("entropy-coded payload is corrupt (symbol out of range)")
            block += s[di] << shift if shift else s[di]
            np.add.at(counts[di], (np.broadcast_to(np.arange(n_q)[None, :, None], s[di].shape), s[di]), 1)
        out[:, :, f0:f1] = block
    if (out >= codebook_size).any():
        raise ContainerError("entropy-coded payload is corrupt (code out of range)")
    return out.reshape(*shape)
