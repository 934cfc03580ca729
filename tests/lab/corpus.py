"""A generated corpus of awkward and hostile uploads (never downloaded).

Every builder returns bytes made with Pillow, numpy, zlib or zipfile in memory.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, PngImagePlugin

RED = (220, 20, 30)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients + blobs), distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.28)
        wave = np.sin(x / width * fx * 6.28 + phase) * np.cos(y / height * fy * 6.28)
        channels.append((wave * 100 + 128 + rng.uniform(-20, 20)).clip(0, 255))
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")


def solid(width: int, height: int, colour: tuple[int, ...] = RED, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (width, height), colour)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG assembled by hand (for depths Pillow cannot write, and lying headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def png_rgb48(width: int = 400, height: int = 400, value: int = 0x8000) -> bytes:
    """16-bit-per-channel RGB PNG, every pixel (value, value/2, 0xFFFF)."""
    pixel = struct.pack(">HHH", value, value // 2, 0xFFFF)
    row = b"\x00" + pixel * width
    return raw_png(width, height, 16, 2, row * height)


def png_grey16(width: int = 400, height: int = 400) -> bytes:
    """16-bit greyscale with a left-to-right ramp 0..65535."""
    ramp = np.linspace(0, 65535, width).astype(np.uint16)
    return encode(Image.fromarray(np.tile(ramp, (height, 1))), "PNG")


def header_bomb() -> bytes:
    """A PNG whose header claims 100000×100000 pixels but carries almost no data."""
    return raw_png(100_000, 100_000, 8, 2, b"\x00" * 1024)


def webp_canvas_bomb() -> bytes:
    """A small WebP whose VP8X header is patched to a 16383×16383 canvas."""
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"  # forces the VP8X chunk
    data = bytearray(encode(photo(100, 100), "WEBP", exif=exif))
    assert data[12:16] == b"VP8X"
    data[24:27] = (16383 - 1).to_bytes(3, "little")
    data[27:30] = (16383 - 1).to_bytes(3, "little")
    return bytes(data)


def decodable_bomb(side: int = 9000) -> bytes:
    """A genuine, fully decodable 1-bit PNG of side² pixels, a few kB compressed."""
    return encode(Image.new("1", (side, side), 0), "PNG")


def text_chunk_bomb() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * (20 * 1024 * 1024), zip=True)
    return encode(solid(400, 400), "PNG", pnginfo=info)


def exif_rotated() -> bytes:
    """A 600×400 JPEG stored sideways: orientation 6 (rotate 90° clockwise to view).

    The stored image has a red left half; viewed upright the red half is on top.
    """
    stored = Image.new("RGB", (600, 400), (0, 0, 255))
    stored.paste(RED, (0, 0, 300, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS: must not survive
    return encode(stored, "JPEG", exif=exif, quality=95)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (400, 400), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (200, 0, 400, 400))
    return encode(image, "PNG", transparency=1)  # right half (index 1) transparent


def rgba_half_transparent() -> bytes:
    image = Image.new("RGBA", (400, 400), (*RED, 255))
    image.paste((0, 0, 0, 0), (0, 0, 200, 400))  # left half fully transparent
    return encode(image, "PNG")


def animated(fmt: str) -> bytes:
    frames = [solid(400, 400, RED), solid(400, 400, (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def zip_of(entries: dict[str | zipfile.ZipInfo, bytes], level: int = 6) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def zip_with_raw_name(raw: bytes, data: bytes) -> bytes:
    """A zip whose entry name is raw non-UTF-8 bytes (no UTF-8 flag): cp437 on read."""
    buffer = zip_of({"X" * len(raw): data})
    return buffer.replace(b"X" * len(raw), raw)


def encrypted_zip(data: bytes) -> bytes:
    """A zip whose only entry has the "encrypted" flag set (local and central header)."""
    raw = bytearray(zip_of({"secret.png": data}))
    central = raw.rfind(b"PK\x01\x02")
    raw[6] |= 0x1
    raw[central + 8] |= 0x1
    return bytes(raw)


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, expected reason code) for single files refused on their own."""
    jpeg = encode(photo(), "JPEG")
    png = encode(photo(seed=1), "PNG")
    # Inverted bytes over the tables and the start of the scan. (Damage deep inside
    # JPEG scan data often decodes to garbage without an error: libjpeg only warns.)
    flipped = bytearray(jpeg)
    flipped[300:4000] = bytes(b ^ 0xFF for b in flipped[300:4000])
    return {
        "empty.png": (b"", "empty_file"),
        "random.jpg": (np.random.default_rng(3).bytes(4096), "not_an_image"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404</body></html>", "not_an_image"),
        "drawing.png": (b'<?xml version="1.0"?><svg xmlns="x"></svg>', "unsupported_format"),
        "scan.jpg": (b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", "unsupported_format"),
        "bitmap.png": (encode(photo(), "BMP"), "unsupported_format"),
        "scan.tiff": (encode(photo(), "TIFF"), "unsupported_format"),
        "anim.gif": (encode(photo(), "GIF"), "unsupported_format"),
        "iphone.jpg": (b"\x00\x00\x00\x18ftypheic" + bytes(200), "unsupported_format"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "cut.png": (png[: len(png) // 2], "truncated"),
        "cut.webp": (encode(photo(), "WEBP")[:3000], "truncated"),
        "damaged.jpg": (bytes(flipped), "corrupt"),
        "bad_crc.png": (png[:30] + b"\x00" + png[31:], "corrupt"),
        "header_bomb.png": (header_bomb(), "decompression_bomb"),
        "decodable_bomb.png": (decodable_bomb(), "decompression_bomb"),
        "text_bomb.png": (text_chunk_bomb(), "decompression_bomb"),
        "canvas_bomb.webp": (webp_canvas_bomb(), "decompression_bomb"),
        "dot.png": (encode(solid(1, 1), "PNG"), "too_small"),
        "thumb.jpg": (encode(photo(200, 150), "JPEG"), "too_small"),
        "archive.jpg": (zip_of({"a.txt": b"x"}), "nested_archive"),
    }
