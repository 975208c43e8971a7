"""Feature noise keyed to the photo: the same photo always carries the same noise.

Noise drawn afresh for every upload bounds what one upload tells the server, not what one
photo does: a server that receives the same photo N times (a retry, a reload, a streamed
frame) averages N independent noises and divides their variance by N. Keyed noise is a
deterministic function of a secret that never leaves the device and of the photo's model
input, so a repeat is the identical upload and gives the server nothing new.

    key   = HMAC-SHA256(secret, b"deepobfuscator-noise-v1" + uint8(round(x * 255)))
            x: one photo's (3, H, W) model input in [0, 1], C order
    block = SHA-256(key || i as 4-byte big-endian), i = 0, 1, ...: 8 little-endian uint32
    value = Box-Muller of consecutive pairs (u0, u1), as the page's addNoise draws it

Torch-free (numpy and the standard library): the device client imports it. The page
(deploy/web/obfuscator.js: photoKey, keyedNormal) computes the same numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

NOISE_KEYS = ("photo", "fresh")  # manifest features.noise_key; absent means "fresh"
DOMAIN = b"deepobfuscator-noise-v1"  # a new key derivation gets a new tag, never this one
SECRET_BYTES = 32
SECRET_ENV = "DEEPOBFUSCATOR_DEVICE_SECRET_FILE"
_VALUES_PER_BLOCK = 4  # 32 bytes of SHA-256 = 8 uint32 = 4 Box-Muller pairs


class DeviceSecretError(UserError):
    """The device secret file is unusable; the message names the file and the fix."""


def quantise(pixels: np.ndarray) -> np.ndarray:
    """One photo's (3, H, W) model input -> uint8 round(x * 255), C order: what the key
    reads. x = uint8 / 255 in float32 comes back exactly; computed in float64 and rounded
    half to even, as the page does, so any array keys identically on both sides."""
    x = np.asarray(pixels)
    if x.ndim != 3 or x.shape[0] != 3 or x.size == 0:
        raise ValueError(f"photo_key takes one photo's model input of shape (3, H, W), got "
                         f"{tuple(x.shape)}: key each image of a batch on its own")
    x64 = x.astype(np.float64)
    if not np.isfinite(x64).all():
        raise ValueError("photo_key: the model input holds NaN or infinity")
    return np.ascontiguousarray(np.clip(np.rint(x64 * 255.0), 0, 255).astype(np.uint8))


def photo_key(device_secret: bytes, pixels: np.ndarray) -> bytes:
    """The 32-byte noise key of one photo: HMAC-SHA256 of the device's secret and the
    photo's quantised model input. Without the secret the key (and so the noise) cannot be
    computed from the photo."""
    check_secret(device_secret)
    return hmac.new(device_secret, DOMAIN + quantise(pixels).tobytes(),
                    hashlib.sha256).digest()


def keyed_normal(key: bytes, n: int) -> np.ndarray:
    """n float32 standard normals drawn from `key` by SHA-256 in counter mode."""
    if n < 0 or n > _VALUES_PER_BLOCK << 32:
        raise ValueError(f"keyed_normal: {n} values; the 4-byte counter gives 0 to 2^34")
    blocks = -(-n // _VALUES_PER_BLOCK)
    stream = b"".join(hashlib.sha256(key + i.to_bytes(4, "big")).digest()
                      for i in range(blocks))
    u = np.frombuffer(stream, "<u4").astype(np.float64)
    # (u0 + 1) / (2^32 + 1) is in (0, 1): the log is finite, |value| <= 6.67
    u1 = (u[0::2] + 1.0) / 4294967297.0
    u2 = u[1::2] / 4294967296.0
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))[:n].astype(np.float32)


def secret_path() -> Path:
    """Where the device secret lives: $DEEPOBFUSCATOR_DEVICE_SECRET_FILE, else
    $XDG_CONFIG_HOME/deepobfuscator/device_secret (~/.config when unset)."""
    override = os.environ.get(SECRET_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deepobfuscator" / "device_secret"


def device_secret(path: str | Path | None = None) -> bytes:
    """This device's 32-byte noise secret, made once from os.urandom and kept in a file
    only its user can read (64 hex digits). Lose it and repeats of photos sent before get
    new noise; leak it and anyone holding a photo can subtract its noise."""
    p = Path(path).expanduser() if path is not None else secret_path()
    if not p.exists():
        _create(p)
    return _read(p)


def _create(p: Path) -> None:
    """Write a new secret atomically with mode 0600. Two processes racing here both end
    up with the one that was linked into place first."""
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # 0600
    except OSError as exc:
        raise DeviceSecretError(f"cannot create the device secret {p}: {exc.strerror}; set "
                                f"${SECRET_ENV} to a file in a folder you can write") from exc
    try:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(SECRET_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # never replaces a secret another process just made
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not p.exists():
                os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(p: Path) -> bytes:
    fix = "delete it and a new secret is made (photos sent before then get new noise)"
    if p.is_dir():
        raise DeviceSecretError(f"the device secret {p} is a folder; set ${SECRET_ENV} to a "
                                "file path")
    try:
        mode = p.stat().st_mode & 0o777
        if os.name == "posix" and mode & 0o077:  # like ssh with a private key
            raise DeviceSecretError(f"the device secret {p} is open to other users (mode "
                                    f"{mode:o}); run `chmod 600 {p}`")
        text = p.read_bytes()
    except OSError as exc:
        raise DeviceSecretError(f"cannot read the device secret {p}: {exc.strerror}; fix its "
                                f"permissions or set ${SECRET_ENV} to another file") from exc
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise DeviceSecretError(f"the device secret {p} is malformed (expected "
                                f"{2 * SECRET_BYTES} hex digits); {fix}")
    return secret


def check_secret(secret: object) -> bytes:
    """The secret itself, if it is one: exactly 32 bytes (as the file and the page hold)."""
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        got = f"{len(secret)} bytes" if isinstance(secret, bytes) else type(secret).__name__
        raise DeviceSecretError(f"a device secret is {SECRET_BYTES} random bytes, got {got}; "
                                "leave it out to use this device's (device_secret())")
    return secret
