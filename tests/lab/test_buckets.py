"""Bucket assignment against kohya sd-scripts' algorithm.

The expected rows of ``KOHYA_TABLE`` were produced by running kohya's own
``BucketManager.select_bucket`` and ``trim_and_resize_if_required`` crop arithmetic
(sd-scripts commit 48d368fa) on each size; they are kohya's answers, not ours.
"""

from __future__ import annotations

import math

import pytest

from lab.buckets import BucketAssignment, BucketSpec, group_by_bucket, make_bucket_resolutions

# (image size, resolution, min_bucket_reso, max_bucket_reso, steps, no_upscale,
#  (bucket, resized, crop)) as kohya computes them.
KOHYA_TABLE = [
    ((1024, 1024), (1024, 1024), 256, 1024, 64, False, ((1024, 1024), (1024, 1024), (0, 0))),
    ((512, 512), (512, 512), 256, 1024, 64, False, ((512, 512), (512, 512), (0, 0))),
    ((3072, 3000), (1024, 1024), 256, 1024, 64, False, ((1024, 1024), (1049, 1024), (12, 0))),
    ((3072, 3000), (1024, 1024), 256, 2048, 64, False, ((1024, 1024), (1049, 1024), (12, 0))),
    ((3072, 3000), (1024, 1024), 256, 1024, 64, True, ((960, 960), (983, 960), (11, 0))),
    ((4000, 3000), (512, 512), 256, 1024, 64, False, ((576, 448), (597, 448), (10, 0))),
    ((3000, 4000), (1024, 1024), 256, 2048, 64, False, ((896, 1152), (896, 1195), (0, 21))),
    ((1920, 1080), (1024, 1024), 256, 2048, 32, False, ((1344, 768), (1365, 768), (10, 0))),
    ((100, 2000), (512, 512), 256, 1024, 64, False, ((256, 1024), (256, 5120), (0, 2048))),
    ((5000, 400), (1024, 1024), 256, 2048, 64, False, ((2048, 256), (3200, 256), (576, 0))),
    ((333, 777), (512, 512), 256, 1024, 64, False, ((320, 768), (329, 768), (4, 0))),
    ((256, 256), (1024, 1024), 256, 2048, 64, False, ((1024, 1024), (1024, 1024), (0, 0))),
    ((768, 512), (512, 512), 256, 1024, 64, False, ((640, 384), (640, 427), (0, 21))),
    ((600, 800), (512, 512), 256, 1024, 64, True, ((384, 512), (384, 512), (0, 0))),
    ((700, 700), (512, 512), 256, 1024, 64, True, ((512, 512), (512, 512), (0, 0))),
    ((4000, 3000), (512, 512), 256, 1024, 64, True, ((512, 384), (512, 384), (0, 0))),
    ((1000, 300), (1024, 1024), 256, 2048, 64, True, ((960, 256), (1000, 300), (20, 22))),
    ((6000, 1000), (1024, 1024), 256, 2048, 64, True, ((2304, 384), (2304, 384), (0, 0))),
    ((1080, 1920), (1024, 1024), 256, 2048, 32, True, ((768, 1344), (768, 1365), (0, 10))),
    ((513, 1025), (512, 512), 256, 1024, 64, False, ((320, 704), (352, 704), (16, 0))),
    ((2048, 2048), (512, 768), 256, 1024, 64, False, ((576, 576), (576, 576), (0, 0))),
]


@pytest.mark.parametrize(("size", "res", "lo", "hi", "steps", "no_up", "expected"), KOHYA_TABLE)
def test_matches_kohya(size, res, lo, hi, steps, no_up, expected):
    spec = BucketSpec(res, lo, hi, steps, no_up, no_upscale_strategy="kohya")
    got = spec.assign(*size)
    assert (got.bucket, got.resized, got.crop) == expected


def test_predefined_buckets_for_512_match_kohya_list():
    # kohya's make_bucket_resolutions((512, 512)) output.
    assert make_bucket_resolutions((512, 512)) == [
        (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768),
        (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320),
        (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
    ]  # fmt: skip
    assert len(make_bucket_resolutions((1024, 1024), 256, 2048, 64)) == 41


@pytest.mark.parametrize("max_bucket", [1024, 2048])
@pytest.mark.parametrize("no_upscale", [False, True])
def test_3072x3000_lands_in_1024_square(max_bucket, no_upscale):
    spec = BucketSpec.square(1024, max_bucket_reso=max_bucket, bucket_no_upscale=no_upscale)
    got = spec.assign(3072, 3000)
    assert got.bucket == (1024, 1024)
    assert got.resized[1] == 1024 and got.resized[0] >= 1024
    # Never upscaled, crop centred.
    assert got.crop == ((got.resized[0] - 1024) // 2, 0)


def _all_sizes():
    sizes = [(w, h) for w in (64, 200, 511, 512, 777, 1024, 1500, 3000, 4096, 9000)
             for h in (64, 300, 512, 1000, 2048, 3001, 7000)]  # fmt: skip
    return sizes


@pytest.mark.parametrize("no_upscale", [False, True])
@pytest.mark.parametrize("steps", [32, 64])
def test_invariants_over_a_grid(no_upscale, steps):
    options = {"max_bucket_reso": 2048, "bucket_reso_steps": steps, "bucket_no_upscale": no_upscale}
    spec = BucketSpec.square(1024, **options)
    kohya = BucketSpec.square(1024, no_upscale_strategy="kohya", **options)
    for w, h in _all_sizes():
        got = spec.assign(w, h)
        bw, bh = got.bucket
        assert bw % steps == 0 and bh % steps == 0
        # The resized image covers the bucket and the crop stays inside it.
        assert got.resized[0] >= bw and got.resized[1] >= bh
        left, top, right, bottom = got.crop_box
        assert left >= 0 and top >= 0
        assert right <= got.resized[0] and bottom <= got.resized[1]
        # Aspect is kept by the resize (to a pixel of rounding).
        assert (
            math.isclose(got.resized[0] / got.resized[1], w / h, rel_tol=0.02)
            or min(got.resized) < 100
        )
        if no_upscale:
            assert got.resized[0] <= w and got.resized[1] <= h
            assert bw * bh <= 1024 * 1024
            # "largest" never yields a smaller bucket than kohya's.
            k = kohya.assign(w, h)
            assert bw * bh >= k.bucket[0] * k.bucket[1]
        else:
            assert got.bucket in spec.predefined_buckets()


def test_image_that_is_a_bucket_keeps_its_size():
    spec = BucketSpec.square(512)
    for bucket in spec.predefined_buckets():
        assert spec.assign(*bucket) == BucketAssignment(bucket, bucket, (0, 0))


def test_nearest_aspect_is_chosen():
    spec = BucketSpec.square(512)
    w, h = 1600, 900
    got = spec.assign(w, h)
    errors = {b: abs(b[0] / b[1] - w / h) for b in spec.predefined_buckets()}
    assert errors[got.bucket] == min(errors.values())


def test_too_small_for_no_upscale_bucket_raises():
    spec = BucketSpec.square(512, bucket_no_upscale=True)
    with pytest.raises(ValueError, match="smaller than one bucket step"):
        spec.assign(40, 500)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resolution": (0, 512)},
        {"resolution": (2048, 2048)},
        {"resolution": (512, 512), "min_bucket_reso": 2048},
        {"resolution": (512, 512), "bucket_reso_steps": 0},
        {"resolution": (512, 512), "no_upscale_max_aspect_error": 1.0},
        {"resolution": (512, 512), "no_upscale_strategy": "biggest"},
    ],
)
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        BucketSpec(**kwargs)


def test_group_by_bucket_never_mixes_buckets():
    spec = BucketSpec.square(512)
    sizes = [(512, 512), (768, 512), (500, 500), (512, 768), (770, 513)]
    groups = group_by_bucket(spec.assign(w, h) for w, h in sizes)
    assert groups[(512, 512)] == [0, 2]
    assert sorted(i for ids in groups.values() for i in ids) == list(range(5))
    for bucket, ids in groups.items():
        assert all(spec.assign(*sizes[i]).bucket == bucket for i in ids)
