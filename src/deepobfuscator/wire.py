"""The feature wire format: one batch of feature tensors, from the phone to the cloud.

numpy only (no torch), so a phone-side client can use it as is. Version 2, all
integers little-endian:

    offset  size    field
    0       4       magic b"DOBF"
    4       1       format version (2)
    5       1       dtype code: 1 float32, 2 float16, 3 int8
    6       1       quantization: 0 none, 1 per-tensor affine, 2 per-channel affine (axis 1)
    7       1       ndim (always 4: N, C, H, W)
    8       4*ndim  shape, u32 each
    ...     4*K     scales, float32           (int8 only; K = N per-tensor, N*C per-channel,
    ...     4*K     zero points, int32         in (image, channel) order)
    ...     rest    payload: N*C*H*W values of the dtype, C order

int8 is affine: x = scale * (q - zero_point), q in [-128, 127], with parameters of
their own for every image (per-tensor) or every image and channel (per-channel): an
image's answer never depends on which other images share its request. (Version 1
shared them across the batch; it is refused.) The range of each channel (or of the
image's tensor) always includes 0, so an exact 0 stays exactly 0: the obfuscator's
features come after a ReLU, are >= 0 and mostly 0. For such features the zero point
is -128 and all 256 levels cover [0, max]: the error of every value is at most
scale / 2 = max / 510 of its channel (0.2 % of the channel's range), zeros are exact.
float16 keeps 11 significant bits (relative error <= 2^-11) and rejects values above
65504.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .errors import UserError

MAGIC = b"DOBF"
VERSION = 2
DTYPES = {"float32": 1, "float16": 2, "int8": 3}
_NP: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("i1")}
QUANT_NONE, QUANT_TENSOR, QUANT_CHANNEL = 0, 1, 2
QUANT_NAMES = {QUANT_NONE: "none", QUANT_TENSOR: "per-tensor affine",
               QUANT_CHANNEL: "per-channel affine"}  # as the manifest's wire.quantization
NDIM = 4
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_FIXED = 8  # magic, version, dtype, quantization, ndim


class WireError(UserError):
    """A body that is not a valid feature batch. `code` is a short machine-readable name."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def _param_count(quant: int, n: int, c: int) -> int:
    """K: how many (scale, zero point) pairs a batch of N images with C channels carries."""
    return {QUANT_NONE: 0, QUANT_TENSOR: n, QUANT_CHANNEL: n * c}[quant]


def header_bytes(dtype: str, channels: int, per_channel: bool = True, batch: int = 1) -> int:
    """Bytes of header + quantization parameters for a batch of `batch` images."""
    quant = (QUANT_CHANNEL if per_channel else QUANT_TENSOR) if dtype == "int8" else QUANT_NONE
    return _FIXED + 4 * NDIM + 8 * _param_count(quant, batch, channels)


def encoded_size(shape: tuple[int, ...], dtype: str = "int8", per_channel: bool = True) -> int:
    """Total bytes of `encode` for features of shape (N, C, H, W), without encoding."""
    n, c, h, w = shape
    return header_bytes(dtype, c, per_channel, n) + n * c * h * w * _NP[DTYPES[dtype]].itemsize


def encode(features: np.ndarray, dtype: str = "int8", per_channel: bool = True) -> bytes:
    """Features (N, C, H, W) -> bytes. `per_channel` only matters for int8."""
    if dtype not in DTYPES:
        raise WireError(f"unknown wire dtype {dtype!r}: use one of {sorted(DTYPES)}", "bad_dtype")
    x = np.asarray(features)
    if x.ndim != NDIM or min(x.shape) < 1:
        raise WireError(f"features must have shape (N, C, H, W) with N, C, H, W >= 1, "
                        f"got {x.shape}", "bad_shape")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise WireError("features contain NaN or infinity", "non_finite")
    code = DTYPES[dtype]
    params = b""
    if dtype == "int8":
        quant = QUANT_CHANNEL if per_channel else QUANT_TENSOR
        axes = (2, 3) if per_channel else (1, 2, 3)  # never across images: see the docstring
        scale, zero = _affine_params(x.min(axis=axes), x.max(axis=axes))
        shape = _param_shape(quant, x.shape[0])
        q = np.rint(x / scale.astype(np.float64).reshape(shape)) + zero.reshape(shape)
        payload = np.clip(q, -128, 127).astype(np.int8).tobytes()
        params = scale.astype("<f4").tobytes() + zero.astype("<i4").tobytes()
    else:
        quant = QUANT_NONE
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            y = x.astype(_NP[code])
        if not np.isfinite(y).all():
            raise WireError("a value exceeds the float16 range (65504); send float32 or int8",
                            "non_finite")
        payload = y.tobytes()
    head = MAGIC + struct.pack("<BBBB", VERSION, code, quant, NDIM)
    return head + struct.pack(f"<{NDIM}I", *x.shape) + params + payload


def _affine_params(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int32) mapping [min(lo, 0), max(hi, 0)] onto [-128, 127]."""
    lo = np.minimum(np.asarray(lo, np.float64), 0.0).reshape(-1)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0).reshape(-1)
    span = hi - lo
    # an all-zero channel gets scale 1: any positive scale represents it exactly
    # and a subnormal span gets the smallest normal scale: span / 255 would round to 0
    tiny = float(np.finfo(np.float32).tiny)
    scale = np.where(span > 0, np.maximum(span / 255.0, tiny), 1.0).astype(np.float32)
    zero = np.clip(np.rint(-128.0 - lo / scale.astype(np.float64)), -128, 127).astype(np.int32)
    return scale, zero


HEADER_BYTES = _FIXED + 4 * NDIM  # what read_header needs: fixed fields and the shape


@dataclass(frozen=True)
class Header:
    """What a body's first HEADER_BYTES declare: enough to size and refuse it early."""

    code: int
    quant: int
    shape: tuple[int, int, int, int]

    @property
    def params(self) -> int:
        return _param_count(self.quant, self.shape[0], self.shape[1])

    @property
    def payload_offset(self) -> int:
        return HEADER_BYTES + 8 * self.params

    @property
    def total_bytes(self) -> int:
        count = int(np.prod(self.shape, dtype=object))  # Python ints: no overflow
        return self.payload_offset + count * _NP[self.code].itemsize


def read_header(data: bytes, expected_shape: tuple[int, ...] | None = None) -> Header:
    """Parse and check the header at the start of `data` (a prefix of the body is enough).
    Raises WireError naming what is wrong."""
    size = len(data)
    if size == 0:
        raise WireError("empty body: send a feature batch in the wire format", "empty")
    if size < _FIXED:
        raise WireError(f"truncated header: {size} bytes, the fixed header alone is {_FIXED}",
                        "truncated")
    if data[:4] != MAGIC:
        hint = ("; it looks gzip-compressed: send it with 'Content-Encoding: gzip'"
                if data[:2] == b"\x1f\x8b" else "")
        raise WireError(f"bad magic {bytes(data[:4])!r}: expected {MAGIC!r} (not a "
                        f"deepobfuscator feature batch){hint}", "bad_magic")
    version, code, quant, ndim = struct.unpack_from("<BBBB", data, 4)
    if version != VERSION:
        raise WireError(f"unsupported wire format version {version}: this server reads "
                        f"version {VERSION}", "bad_version")
    if code not in _NP:
        raise WireError(f"unknown dtype code {code}: valid codes "
                        f"{ {v: k for k, v in DTYPES.items()} }", "bad_dtype")
    want_quant = (QUANT_TENSOR, QUANT_CHANNEL) if code == DTYPES["int8"] else (QUANT_NONE,)
    if quant not in want_quant:
        raise WireError(f"quantization mode {quant} is not valid for dtype code {code} "
                        f"(valid: {list(want_quant)})", "bad_quantization")
    if ndim != NDIM:
        raise WireError(f"ndim {ndim} not supported: features are (N, C, H, W)", "bad_shape")
    if size < HEADER_BYTES:
        raise WireError("truncated header: the shape is cut off", "truncated")
    shape = struct.unpack_from(f"<{ndim}I", data, _FIXED)
    if min(shape) < 1:
        raise WireError(f"shape {shape} has a zero dimension", "bad_shape")
    if expected_shape is not None and tuple(shape[1:]) != tuple(expected_shape):
        raise WireError(f"feature shape mismatch: body has (C, H, W) = {tuple(shape[1:])}, "
                        f"this model expects {tuple(expected_shape)}", "shape_mismatch")
    return Header(code, quant, tuple(shape))  # type: ignore[arg-type]


def decode(data: bytes, expected_shape: tuple[int, ...] | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Bytes -> float32 features (N, C, H, W). Raises WireError naming what is wrong.

    expected_shape: the model's per-item feature shape (C, H, W) from the manifest.
    """
    size = len(data)
    if size > max_bytes:
        raise WireError(f"body too large: {size} bytes > limit {max_bytes}; send fewer "
                        "images per request", "too_large")
    head = read_header(data, expected_shape)
    code, quant, shape, ndim = head.code, head.quant, head.shape, NDIM
    k, offset, expected = head.params, head.payload_offset, head.total_bytes
    count = int(np.prod(shape, dtype=object))
    if size != expected:
        kind = "truncated" if size < expected else "length_mismatch"
        raise WireError(f"length mismatch: shape {shape} as {_name(code)} needs {expected} "
                        f"bytes, the body has {size}", kind)
    payload = np.frombuffer(data, dtype=_NP[code], count=count, offset=offset).reshape(shape)
    if quant == QUANT_NONE:
        out = payload.astype(np.float32)
        if not np.isfinite(out).all():
            raise WireError("non-finite values (NaN or infinity) in the payload", "non_finite")
        return out
    p = _FIXED + 4 * ndim
    scale = np.frombuffer(data, "<f4", count=k, offset=p).astype(np.float64)
    zero = np.frombuffer(data, "<i4", count=k, offset=p + 4 * k).astype(np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise WireError("non-finite or non-positive quantization scale", "non_finite")
    if (zero < -128).any() or (zero > 127).any():
        raise WireError("quantization zero point outside [-128, 127]", "bad_quantization")
    bshape = _param_shape(quant, shape[0])
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        out = (scale.reshape(bshape) * (payload - zero.reshape(bshape))).astype(np.float32)
    if not np.isfinite(out).all():  # a huge scale can overflow float32
        raise WireError("non-finite values after dequantization", "non_finite")
    return out


def _param_shape(quant: int, n: int) -> tuple[int, ...]:
    """How K parameters broadcast against (N, C, H, W)."""
    return (n, -1, 1, 1) if quant == QUANT_CHANNEL else (n, 1, 1, 1)


def _name(code: int) -> str:
    return {v: k for k, v in DTYPES.items()}[code]
