"""One image through lab.dataset.image: awkward inputs come out as clean RGB, hostile
ones get their specific reason code and a one-line message."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from lab.dataset.image import normalise_image
from lab.dataset.reasons import DatasetError, Reason, Warn
from lab.dataset.settings import IngestSettings
from lab.families import BaseFamily
from tests.lab import corpus

SD15 = BaseFamily.SD15


def decoded(result) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


def codes(result) -> set[Warn]:
    return {notice.code for notice in result.notices}


def near(pixel, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


HOSTILE = corpus.hostile_files()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gets_its_code_and_a_one_line_message(name):
    data, expected = HOSTILE[name]
    with pytest.raises(DatasetError) as caught:
        normalise_image(data, name, IngestSettings(), SD15)
    error = caught.value
    assert error.reason == Reason(expected), str(error)
    assert error.code == expected
    message = str(error)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message and len(message) < 200


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    result = normalise_image(corpus.encode(corpus.solid(400, 300).convert("CMYK"), "JPEG"), "c")
    image = decoded(result)
    assert image.mode == "RGB" and result.ext == "jpg"
    assert near(image.getpixel((200, 150)), corpus.RED, tolerance=20)
    assert Warn.CONVERTED in codes(result)


def test_16bit_grey_is_scaled_not_clipped():
    image = decoded(normalise_image(corpus.png_grey16(), "g16.png"))
    assert image.mode == "RGB"
    row = np.asarray(image)[0, :, 0].astype(int)
    # A ramp 0..65535 maps to 0..255 across the width (clipping would give 255 almost
    # everywhere).
    assert row[0] <= 1 and row[-1] >= 254
    assert abs(row[len(row) // 2] - 128) <= 2


def test_48bit_rgb_png_is_reduced_to_8_bits():
    image = decoded(normalise_image(corpus.png_rgb48(value=0x8000), "rgb48.png"))
    assert image.mode == "RGB"
    assert near(image.getpixel((10, 10)), (128, 64, 255), tolerance=1)


def test_palette_transparency_is_flattened_onto_the_background():
    settings = IngestSettings(background=(0, 0, 255))
    result = normalise_image(corpus.palette_with_transparency(), "p.png", settings)
    image = decoded(result)
    assert image.mode == "RGB"
    assert image.getpixel((50, 50)) == (255, 0, 0)  # opaque index 0: red
    assert image.getpixel((300, 50)) == (0, 0, 255)  # transparent: the background
    assert Warn.TRANSPARENCY_FLATTENED in codes(result)


def test_rgba_is_composited_never_alpha_dropped():
    result = normalise_image(corpus.rgba_half_transparent(), "a.png")
    image = decoded(result)
    # Dropping alpha would leave the black of the transparent pixels.
    assert image.getpixel((10, 10)) == (255, 255, 255)
    assert image.getpixel((300, 10)) == corpus.RED


def test_greyscale_alpha_and_bilevel_become_rgb():
    la = corpus.encode(Image.new("LA", (300, 300), (90, 0)), "PNG")
    image = decoded(normalise_image(la, "la.png", IngestSettings(background=(10, 20, 30))))
    assert image.getpixel((5, 5)) == (10, 20, 30)
    bilevel = corpus.encode(Image.new("1", (300, 300), 1), "PNG")
    assert decoded(normalise_image(bilevel, "1.png")).getpixel((5, 5)) == (255, 255, 255)
    grey = corpus.encode(Image.new("L", (300, 300), 77), "JPEG")
    assert near(decoded(normalise_image(grey, "l.jpg")).getpixel((5, 5)), (77, 77, 77), 2)


def test_exif_orientation_applied_and_metadata_dropped():
    result = normalise_image(corpus.exif_rotated(), "phone.jpg")
    image = decoded(result)
    # Stored 600×400 sideways; upright it is 400×600 with the red half on top.
    assert image.size == (400, 600) == (result.width, result.height)
    assert near(image.getpixel((200, 100)), corpus.RED, 25)
    assert near(image.getpixel((200, 500)), (0, 0, 255), 25)
    assert Warn.ORIENTATION_APPLIED in codes(result)
    assert not image.getexif()  # no GPS, no orientation left to apply twice
    assert b"Exif" not in result.data[:4096]


def test_png_text_chunks_and_icc_profiles_do_not_survive():
    from PIL import ImageCms, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret person")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt, options in (("PNG", {"pnginfo": info}), ("JPEG", {})):
        data = corpus.encode(corpus.photo(), fmt, icc_profile=srgb, **options)
        result = normalise_image(data, f"t.{fmt.lower()}")
        assert b"secret person" not in result.data
        image = decoded(result)
        assert image.info.get("Author") is None
        assert image.info.get("icc_profile") is None


def test_polyglot_payload_after_the_image_is_dropped():
    # A JPEG with a zip appended (a classic polyglot): the image is kept, the rest is not.
    payload = corpus.zip_of({"evil.sh": b"#!/bin/sh\necho owned\n" * 50}, level=0)
    result = normalise_image(corpus.encode(corpus.photo(), "JPEG") + payload, "poly.jpg")
    assert b"owned" not in result.data and b"PK\x03\x04" not in result.data
    assert decoded(result).size == (640, 480)


def test_oversized_jpeg_is_downscaled_to_the_cap():
    data = corpus.encode(corpus.photo(4000, 1000), "JPEG")
    result = normalise_image(data, "wide.jpg")
    assert (result.width, result.height) == (3000, 750)
    assert decoded(result).size == (3000, 750)
    assert Warn.DOWNSCALED in codes(result)
    assert result.source_size == (4000, 1000)


def test_draft_decoding_still_gives_exact_cap_size():
    # 6400×4800: libjpeg decodes at 1/2 (3200×2400), then we resize to 3000×2250.
    data = corpus.encode(corpus.photo(800, 600).resize((6400, 4800)), "JPEG", quality=80)
    result = normalise_image(data, "big.jpg", IngestSettings(max_side=3000))
    assert (result.width, result.height) == (3000, 2250)


def test_webp_becomes_png_and_content_beats_the_file_name():
    webp = corpus.encode(corpus.photo(), "WEBP")
    result = normalise_image(webp, "looks_like.jpg")
    assert result.source_format == "WEBP" and result.ext == "png"
    assert decoded(result).format == "PNG"
    png_named_jpg = normalise_image(corpus.encode(corpus.photo(), "PNG"), "x.jpg")
    assert png_named_jpg.ext == "png"


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_keeps_first_frame_with_a_warning(fmt):
    result = normalise_image(corpus.animated(fmt), f"anim.{fmt.lower()}")
    assert Warn.ANIMATED_FIRST_FRAME in codes(result)
    assert near(decoded(result).getpixel((10, 10)), corpus.RED, 10)


def test_mpo_phone_photo_is_a_jpeg_not_an_animation():
    out = io.BytesIO()
    corpus.photo().save(out, "MPO", save_all=True, append_images=[corpus.photo(320, 240, 3)])
    result = normalise_image(out.getvalue(), "phone.jpg", IngestSettings(animated="reject"))
    assert (result.ext, result.source_format, result.width) == ("jpg", "JPEG", 640)
    assert Warn.ANIMATED_FIRST_FRAME not in codes(result)


def test_animated_can_be_refused_instead():
    with pytest.raises(DatasetError) as caught:
        normalise_image(corpus.animated("WEBP"), "a.webp", IngestSettings(animated="reject"))
    assert caught.value.reason is Reason.ANIMATED


def test_too_small_can_be_a_warning_but_1x1_is_always_refused():
    settings = IngestSettings(too_small="warn")
    result = normalise_image(corpus.encode(corpus.photo(300, 300), "PNG"), "s.png", settings, SD15)
    assert Warn.SMALL_IMAGE in codes(result)
    with pytest.raises(DatasetError) as caught:
        normalise_image(corpus.encode(corpus.solid(1, 1), "PNG"), "d.png", settings, SD15)
    assert caught.value.reason is Reason.TOO_SMALL
    # SDXL's minimum is higher than SD1.5's.
    with pytest.raises(DatasetError):
        normalise_image(
            corpus.encode(corpus.photo(500, 500), "PNG"), "m.png", None, BaseFamily.SDXL
        )


def test_file_size_cap():
    data = corpus.encode(corpus.photo(), "PNG")
    with pytest.raises(DatasetError) as caught:
        normalise_image(data, "big.png", IngestSettings(max_file_bytes=1000))
    assert caught.value.reason is Reason.FILE_TOO_LARGE


def test_pixel_limit_comes_from_settings():
    data = corpus.encode(corpus.photo(1000, 1000), "JPEG")
    with pytest.raises(DatasetError) as caught:
        normalise_image(data, "x.jpg", IngestSettings(max_pixels=999_999))
    assert caught.value.reason is Reason.DECOMPRESSION_BOMB
    assert normalise_image(data, "x.jpg", IngestSettings(max_pixels=1_000_000)).width == 1000


def test_hashes_and_facts():
    data = corpus.encode(corpus.photo(), "PNG")
    result = normalise_image(data, "x.png")
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    assert result.source_sha256 == hashlib.sha256(data).hexdigest()
    assert len(result.phash) == 16
    # Deterministic: the same upload always gets the same content address.
    assert normalise_image(data, "other-name.png").sha256 == result.sha256


def test_perceptual_hash_matches_imagehash_phash():
    import imagehash

    from lab.dataset.image import perceptual_hash

    distances = []
    for seed in range(20):
        image = corpus.photo(120 + seed * 5, 90 + seed * 4, seed=seed)  # ≤ 256: no thumbnail
        ours, reference = perceptual_hash(image), imagehash.phash(image)
        distances.append(imagehash.hex_to_hash(ours) - reference)
    # Same algorithm; a coefficient sitting on the median may round the other way.
    assert max(distances) <= 2 and distances.count(0) >= 18
