"""Recognise what a file really is from its first bytes, to explain a refusal.

Pillow decides what we *accept* (an explicit JPEG/PNG/WebP allow-list); this module
only names what we refuse so the uploader gets "a BMP image" rather than "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sniffed", "sniff"]

ACCEPTED = frozenset({"JPEG", "PNG", "WEBP"})


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the bytes look like: a label (``"PNG"``, ``"HTML"``…) and its kind."""

    label: str
    kind: str
    """``image`` (a raster format), ``archive``, ``document`` or ``other``."""

    @property
    def accepted(self) -> bool:
        return self.kind == "image" and self.label in ACCEPTED


_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    # (magic, offset, label, kind)
    (b"\xff\xd8\xff", 0, "JPEG", "image"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", "image"),
    (b"GIF87a", 0, "GIF", "image"),
    (b"GIF89a", 0, "GIF", "image"),
    (b"BM", 0, "BMP", "image"),
    (b"II*\x00", 0, "TIFF", "image"),
    (b"MM\x00*", 0, "TIFF", "image"),
    (b"\x00\x00\x01\x00", 0, "ICO", "image"),
    (b"8BPS", 0, "PSD", "image"),
    (b"qoif", 0, "QOI", "image"),
    (b"\xff\x0a", 0, "JPEG XL", "image"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL", "image"),
    (b"%PDF", 0, "PDF", "document"),
    (b"PK\x03\x04", 0, "ZIP", "archive"),
    (b"PK\x05\x06", 0, "ZIP", "archive"),
    (b"\x1f\x8b", 0, "GZIP", "archive"),
    (b"Rar!\x1a\x07", 0, "RAR", "archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "7Z", "archive"),
    (b"BZh", 0, "BZIP2", "archive"),
    (b"\xfd7zXZ\x00", 0, "XZ", "archive"),
    (b"(\xb5/\xfd", 0, "ZSTD", "archive"),
    (b"ustar", 257, "TAR", "archive"),
    (b"\x7fELF", 0, "ELF executable", "other"),
    (b"MZ", 0, "Windows executable", "other"),
)

_ISO_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"isom": "MP4 video",
    b"mp42": "MP4 video",
    b"qt  ": "QuickTime video",
}


def sniff(data: bytes) -> Sniffed:
    """Name the format of ``data`` from its magic bytes (``other`` when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed("WEBP", "image")
    if data[:4] == b"RIFF":
        return Sniffed("RIFF media (AVI/WAV)", "other")
    if data[4:8] == b"ftyp":
        brand = bytes(data[8:12])
        label = _ISO_BRANDS.get(brand, "ISO media")
        kind = "image" if label in ("HEIC", "HEIF", "AVIF") else "other"
        return Sniffed(label, kind)
    for magic, offset, label, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return Sniffed(label, kind)
    return _sniff_text(data[:2048])


def _sniff_text(head: bytes) -> Sniffed:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return Sniffed("HTML page", "document")
    if b"<svg" in text:
        return Sniffed("SVG", "document")
    if text.startswith(b"<?xml"):
        return Sniffed("XML document", "document")
    if text.startswith((b"{", b"[")):
        return Sniffed("JSON/text", "document")
    if head and _looks_like_text(head):
        return Sniffed("text file", "document")
    return Sniffed("unknown data", "other")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the 2 KiB window is still text.
        return error.start >= len(head) - 3
    return True
