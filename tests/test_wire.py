import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepobfuscator import wire
from deepobfuscator.wire import WireError, decode, encode, encoded_size

SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))


def arrays(elements):
    return SHAPES.flatmap(lambda s: hnp.arrays(np.float32, s, elements=elements))


FINITE = st.floats(-1e6, 1e6, allow_nan=False, width=32)
RELU = st.one_of(st.just(0.0), st.floats(0, 50, allow_nan=False, width=32))  # sparse, >= 0


@settings(max_examples=60, deadline=None)
@given(arrays(FINITE))
def test_float32_round_trip_is_exact(x):
    data = encode(x, "float32")
    assert len(data) == encoded_size(x.shape, "float32")
    np.testing.assert_array_equal(decode(data, expected_shape=x.shape[1:]), x)


@settings(max_examples=60, deadline=None)
@given(arrays(st.floats(-6e4, 6e4, allow_nan=False, width=32)))
def test_float16_round_trip_within_half_precision(x):
    y = decode(encode(x, "float16"))
    # round to nearest: relative 2^-11, and half the subnormal spacing (2^-25) near zero
    assert (np.abs(y - x) <= np.abs(x) * 2.0**-11 + 2.0**-25).all()


def _int8_bound(x: np.ndarray, per_channel: bool) -> np.ndarray:
    axes = (2, 3) if per_channel else (1, 2, 3)  # each image has its own parameters
    lo = np.minimum(x.min(axis=axes, keepdims=True), 0).astype(np.float64)
    hi = np.maximum(x.max(axis=axes, keepdims=True), 0).astype(np.float64)
    return (hi - lo) / 255 / 2 * (1 + 1e-5) + 1e-12


@settings(max_examples=80, deadline=None)
@given(arrays(st.one_of(RELU, FINITE)), st.booleans())
def test_int8_error_is_at_most_half_a_step(x, per_channel):
    data = encode(x, "int8", per_channel=per_channel)
    assert len(data) == encoded_size(x.shape, "int8", per_channel)
    y = decode(data)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert (np.abs(y.astype(np.float64) - x) <= _int8_bound(x, per_channel)).all()


@settings(max_examples=40, deadline=None)
@given(arrays(RELU))
def test_int8_keeps_relu_zeros_exact(x):
    y = decode(encode(x, "int8"))
    assert (y[x == 0] == 0).all()
    assert (y >= 0).all()


def test_int8_is_a_quarter_of_float32():
    x = np.random.default_rng(0).random((2, 16, 8, 8), dtype=np.float32)
    assert len(encode(x, "float32")) - 24 == 4 * (len(encode(x, "int8")) - 24 - 8 * 2 * 16)
    assert len(encode(x, "int8", per_channel=False)) == 24 + 8 * 2 + 2 * 16 * 8 * 8


@pytest.mark.parametrize("dtype,per_channel", [("int8", True), ("int8", False),
                                               ("float16", True), ("float32", True)])
def test_an_image_decodes_the_same_whatever_shares_its_batch(dtype, per_channel):
    # regression: version 1 took int8 ranges over the whole batch, so an image's answer
    # changed with the other images in its request (and with the client's --batch-size)
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(3, 4, 5, 5)), 0).astype(np.float32)
    x[1] *= 100  # one image with a much larger range than the others
    batch = decode(encode(x, dtype, per_channel))
    for i in range(len(x)):
        alone = decode(encode(x[i:i + 1], dtype, per_channel))
        np.testing.assert_array_equal(batch[i:i + 1], alone)


def test_version_1_bodies_are_refused():
    b = bytearray(encode(np.ones((1, 2, 2, 2), np.float32), "int8"))
    b[4] = 1
    with pytest.raises(WireError, match="version 1") as info:
        decode(bytes(b))
    assert info.value.code == "bad_version"


def _body(dtype="float32", shape=(2, 3, 4, 4)):
    return bytearray(encode(np.random.default_rng(1).random(shape, dtype=np.float32), dtype))


def _patched(offset: int, value: bytes, dtype="float32") -> bytes:
    b = _body(dtype)
    b[offset:offset + len(value)] = value
    return bytes(b)


NAN = struct.pack("<f", float("nan"))
CORRUPTIONS = {
    "empty": (b"", "empty"),
    "short": (b"DOB", "truncated"),
    "magic": (_patched(0, b"XOBF"), "bad_magic"),
    "version": (_patched(4, b"\x09"), "bad_version"),
    "dtype": (_patched(5, b"\x07"), "bad_dtype"),
    "quant_float": (_patched(6, b"\x02"), "bad_quantization"),
    "quant_int8": (_patched(6, b"\x00", "int8"), "bad_quantization"),
    "ndim": (_patched(7, b"\x03"), "bad_shape"),
    "zero_dim": (_patched(8, struct.pack("<I", 0)), "bad_shape"),
    "forged_huge_shape": (_patched(8, struct.pack("<I", 2**32 - 1)), "truncated"),
    "truncated_payload": (bytes(_body()[:-3]), "truncated"),
    "trailing_bytes": (bytes(_body()) + b"\0", "length_mismatch"),
    "nan_payload": (_patched(24, NAN), "non_finite"),
    "inf_payload_fp16": (_patched(24, struct.pack("<e", float("inf")), "float16"), "non_finite"),
    "nan_scale": (_patched(24, NAN, "int8"), "non_finite"),
    "zero_scale": (_patched(24, struct.pack("<f", 0.0), "int8"), "non_finite"),
    # (2, 3, 4, 4) per-channel: 2 x 3 scales, then the zero points
    "zero_point": (_patched(24 + 4 * 6, struct.pack("<i", 500), "int8"), "bad_quantization"),
    "json": (b'{"features": [1, 2, 3]}', "bad_magic"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_is_a_wire_error_naming_it(name):
    data, code = CORRUPTIONS[name]
    with pytest.raises(WireError) as info:
        decode(data)
    assert info.value.code == code
    assert str(info.value)


def test_shape_mismatch_and_size_limit():
    data = bytes(_body())
    with pytest.raises(WireError, match="shape mismatch.*expects \\(16, 8, 8\\)"):
        decode(data, expected_shape=(16, 8, 8))
    with pytest.raises(WireError, match="too large") as info:
        decode(data, max_bytes=100)
    assert info.value.code == "too_large"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_error(data):
    try:
        out = decode(data)
    except WireError:
        return
    assert np.isfinite(out).all()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["float32", "float16", "int8"]), st.data())
def test_mutated_bodies_decode_finite_or_raise_wire_error(dtype, data):
    b = _body(dtype)
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    try:
        out = decode(bytes(b[:cut]))
    except WireError:
        return
    assert np.isfinite(out).all()


def test_encode_refuses_what_it_cannot_send():
    with pytest.raises(WireError, match="NaN or infinity"):
        encode(np.full((1, 1, 2, 2), np.nan, np.float32))
    with pytest.raises(WireError, match="float16 range"):
        encode(np.full((1, 1, 2, 2), 1e6, np.float32), "float16")
    with pytest.raises(WireError, match="shape"):
        encode(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(WireError, match="unknown wire dtype"):
        encode(np.zeros((1, 1, 1, 1), np.float32), "bfloat16")
    assert wire.header_bytes("float32", 16) == 24
    assert wire.header_bytes("int8", 16, batch=3) == 24 + 8 * 3 * 16
