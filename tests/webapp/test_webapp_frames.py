"""The binary frame format: header length, JSON header, uint8 images at their offsets."""

import json
import struct

import numpy as np
import pytest

from webapp.live.frames import FrameImage, decode_frame, downsample_errors, encode_frame, with_header


def test_round_trip_keeps_header_and_images():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = np.full((2, 2), 7, dtype=np.uint8)
    data = encode_frame({"job": 3, "seq": 9, "status": "running"},
                        [FrameImage("object_amplitude", a, 0.5, 1.5), FrameImage("probe_amplitude_0", b, 0, 2)])
    (n,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4 : 4 + n])
    assert header["images"][0] == {"name": "object_amplitude", "shape": [3, 4], "offset": 0, "length": 12,
                                   "vmin": 0.5, "vmax": 1.5}
    assert header["images"][1]["offset"] == 12 and header["images"][1]["length"] == 4
    assert len(data) == 4 + n + 16
    decoded, images = decode_frame(data)
    assert decoded["seq"] == 9
    np.testing.assert_array_equal(images["object_amplitude"], a)
    np.testing.assert_array_equal(images["probe_amplitude_0"], b)


def test_with_header_changes_fields_and_keeps_pixels():
    a = np.eye(4, dtype=np.uint8) * 200
    data = encode_frame({"job": 1, "seq": 1, "status": "running"}, [FrameImage("object_phase", a, -1, 1)])
    changed = with_header(data, status="done", seq=2)
    header, images = decode_frame(changed)
    assert header["status"] == "done" and header["seq"] == 2
    np.testing.assert_array_equal(images["object_phase"], a)


def test_non_finite_ranges_become_null():
    data = encode_frame({"job": 1}, [FrameImage("object_phase", np.zeros((1, 1), np.uint8), float("nan"), 1)])
    assert decode_frame(data)[0]["images"][0]["vmin"] is None


def test_error_curve_downsampled_to_500_points_keeping_ends():
    errors = [1.0 / (i + 1) for i in range(5000)]
    xs, ys = downsample_errors(errors)
    assert len(xs) <= 500 and len(ys) == len(xs)
    assert xs[0] == 1 and xs[-1] == 5000 and ys[-1] == errors[-1]
    assert xs == sorted(xs)
    assert downsample_errors([0.3, 0.2]) == ([1, 2], [0.3, 0.2])


def test_many_probe_modes_are_strided_to_keep_frames_small():
    from webapp.live.frames import MAX_PROBE_PIXELS, limit_probe_images

    obj = FrameImage("object_amplitude", np.zeros((512, 512), np.uint8), 0, 1)
    probes = [FrameImage(f"probe_amplitude_{k}", np.zeros((512, 512), np.uint8), 0, 1) for k in range(8)]
    limited = limit_probe_images([obj, *probes])
    assert limited[0] is obj and [i.name for i in limited[1:]] == [p.name for p in probes]
    assert sum(i.pixels.size for i in limited[1:]) <= MAX_PROBE_PIXELS
    assert len(encode_frame({"job": 1}, limited)) < 1_000_000
    small = [obj, FrameImage("probe_amplitude_0", np.zeros((64, 64), np.uint8), 0, 1)]
    assert limit_probe_images(small) == small


def test_probe_phases_share_the_probe_budget_and_their_pixel_size_grows_with_the_stride():
    from webapp.live.frames import MAX_PROBE_PIXELS, limit_probe_images

    obj = FrameImage("object_amplitude", np.zeros((512, 512), np.uint8), 0, 1, 1e-8)
    probes = [FrameImage(f"probe_{part}_{k}", np.zeros((256, 256), np.uint8), 0, 1, 1e-8)
              for k in range(2) for part in ("amplitude", "phase")]
    limited = limit_probe_images([obj, *probes])
    assert limited[0] is obj
    assert sum(i.pixels.size for i in limited[1:]) <= MAX_PROBE_PIXELS
    assert all(i.pixels.shape == (128, 128) and i.pixel_m == pytest.approx(2e-8) for i in limited[1:])
    header, _ = decode_frame(encode_frame({"job": 1}, limited))
    assert [e["pixel_m"] for e in header["images"]] == [1e-8] + [2e-8] * 4
