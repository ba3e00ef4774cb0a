"""zstd compression with the sha256 of the compressed bytes taken on the way: one pass, bounded memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import zstandard

CHUNK = 4 << 20


class CompressingWriter:
    """Write plain bytes in, get a ``.zst`` file out plus its size and sha256 (of what is stored)."""

    def __init__(self, path: Path, level: int = 3) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        # One zstd worker thread: compression overlaps with reading and splitting the stream.
        self.compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=1).compressobj()
        self.size = 0
        self.raw_bytes = 0
        self.sha256 = ""

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.file.write(data)
            self.size += len(data)

    def write(self, data: bytes) -> None:
        if data:
            self.raw_bytes += len(data)
            self._emit(self.compressor.compress(data))

    def close(self) -> None:
        if self.file.closed:
            return
        self._emit(self.compressor.flush())
        self.file.flush()
        os.fsync(self.file.fileno())  # durable before any manifest can name it
        self.file.close()
        self.sha256 = self.digest.hexdigest()


def compress_file(source: Path, target: Path, level: int = 3) -> CompressingWriter:
    """Compress one file; returns the closed writer with ``size``, ``sha256`` and ``raw_bytes``."""
    writer = CompressingWriter(target, level)
    try:
        with open(source, "rb") as src:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
    finally:
        writer.close()
    return writer


def open_decompressed(path: Path):  # noqa: ANN201 - a zstandard stream reader
    """A readable stream of a ``.zst`` file's plain bytes."""
    return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
