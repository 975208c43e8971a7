"""NaN-free SSIM and MS-SSIM (Wang, Simoncelli & Bovik 2003) for use as a training loss.

Conventions (those of the reference MATLAB code, TensorFlow and ``pytorch_msssim``):

* Gaussian window of odd width ``window`` and std ``sigma``, applied separably per channel
  with *valid* padding (no border is invented).
* C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = ``data_range``.
* Between scales a 2x2 average pool; an odd side keeps its last row/column, averaged over
  the pixels that exist (``ceil_mode``), as the MATLAB reference does.
* MS-SSIM per channel = prod_{j<M} cs_j^beta_j * ssim_M^beta_M (cs at the finer scales,
  full SSIM at the coarsest), then averaged over channels.

The authors' DeepObfuscator code hit NaN because cs (a correlation) goes negative once the
obfuscator decorrelates the images, and a negative number to a fractional power is NaN.
Here every per-scale term is clamped to ``_FLOOR`` before the powers, so value and
gradient stay finite for any input; there is no fallback to another loss.

All arithmetic is float32, also under autocast: the variances are differences of
near-equal numbers (E[x^2] - mu^2) that bf16/fp16 cannot resolve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["STANDARD_BETAS", "MSSSIMSettings", "ms_ssim", "settings_for_size", "ssim"]

# Wang et al. 2003, finest scale first.
STANDARD_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# Floor for cs/ssim before the fractional powers: keeps x**beta and its gradient finite
# (cs <= 0 means "no structural similarity", so the floor only touches meaningless values).
_FLOOR = 1e-6

# Gaussian sigma used for each window width by settings_for_size. Chosen so that
# torchmetrics' width rule int(3.5*sigma + 0.5)*2 + 1 gives the same window.
_SIGMA_FOR_WINDOW = {11: 1.5, 9: 1.2, 7: 0.8, 5: 0.6, 3: 0.4}

# Below this short side MS-SSIM is not meaningful; settings_for_size refuses.
MIN_SIDE = 16

_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class MSSSIMSettings:
    """Parameters of MS-SSIM.

    scales: number of scales M (each halves the image).
    sigma, window: Gaussian window std and (odd) width in pixels, the same at every scale.
    betas: per-scale exponents, finest first; ``None`` -> the standard betas truncated to
        ``scales`` and renormalised to sum to 1 (so the result stays in [0, 1]).
    data_range: L in C1/C2, i.e. max - min of the pixel range.

    An image fits when ``min(H, W) // 2**(scales - 1) >= window``: the coarsest scale must
    hold at least one full window (5 scales x 11 px -> 176 px, 3 scales x 11 px -> 44 px).
    """

    scales: int = 3
    sigma: float = 1.5
    window: int = 11
    betas: tuple[float, ...] | None = None
    data_range: float = 1.0

    def __post_init__(self) -> None:
        if self.betas is not None:
            # Accept lists (e.g. from YAML / to_dict) but store a hashable tuple.
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not isinstance(self.scales, int) or self.scales < 1:
            raise ValueError(f"MSSSIMSettings.scales must be an int >= 1, got {self.scales!r}")
        if not isinstance(self.window, int) or self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"MSSSIMSettings.window must be an odd int >= 3, got {self.window!r}")
        if not self.sigma > 0:
            raise ValueError(f"MSSSIMSettings.sigma must be > 0, got {self.sigma!r}")
        if not self.data_range > 0:
            raise ValueError(f"MSSSIMSettings.data_range must be > 0, got {self.data_range!r}")
        if self.betas is None:
            if self.scales > len(STANDARD_BETAS):
                raise ValueError(
                    f"only {len(STANDARD_BETAS)} standard betas exist; give betas explicitly "
                    f"for scales={self.scales}"
                )
        else:
            if len(self.betas) != self.scales:
                raise ValueError(
                    f"MSSSIMSettings.betas has {len(self.betas)} entries but scales={self.scales}"
                )
            if any(not (b >= 0 and b < float("inf")) for b in self.betas) or sum(self.betas) <= 0:
                raise ValueError(
                    f"MSSSIMSettings.betas must be finite, >= 0 and not all 0, got {self.betas}"
                )

    @property
    def effective_betas(self) -> tuple[float, ...]:
        """The exponents actually used (resolves ``betas=None``)."""
        if self.betas is not None:
            return self.betas
        head = STANDARD_BETAS[: self.scales]
        total = sum(head)
        return tuple(b / total for b in head)

    @property
    def min_side(self) -> int:
        """Smallest short image side these settings accept."""
        return self.window * 2 ** (self.scales - 1)

    def to_dict(self) -> dict:
        """Plain-Python form for configs and logs; ``MSSSIMSettings(**d)`` rebuilds it."""
        d = asdict(self)
        d["betas"] = None if self.betas is None else list(self.betas)
        return d


def settings_for_size(height: int, width: int) -> MSSSIMSettings:
    """Pick valid MS-SSIM settings for images of this size (standard window when possible).

    Rule, on the short side s = min(height, width):

    * s >= 176: 5 scales, sigma 1.5, window 11 (the standard MS-SSIM);
    * 128 <= s < 176: 4 scales, sigma 1.5, window 11;
    * 20 <= s < 128: 3 scales; window 11 (sigma 1.5) when s >= 44, else the largest odd
      window <= s // 4 (7 at 32 px), with a sigma keeping torchmetrics' width rule;
    * 16 <= s < 20: 2 scales, largest odd window <= s // 2 (7 or 9);
    * s < 16: ValueError (too small for a multi-scale measure).

    The result always satisfies ``s // 2**(scales - 1) >= window``. From 44 px up, fewer
    scales are preferred over a smaller window (the per-scale statistics keep their usual
    meaning); below 44 px the window shrinks so that 3 scales remain down to 20 px.
    """
    short = min(int(height), int(width))
    if short < MIN_SIDE:
        raise ValueError(
            f"image {height}x{width} is too small for MS-SSIM (short side must be >= {MIN_SIDE}); "
            "use ssim() or a pixel loss at this size"
        )
    if short >= 176:
        scales = 5
    elif short >= 128:
        scales = 4
    elif short >= 20:
        scales = 3
    else:
        scales = 2
    fit = short // 2 ** (scales - 1)
    window = min(11, fit if fit % 2 == 1 else fit - 1)
    return MSSSIMSettings(scales=scales, sigma=_SIGMA_FOR_WINDOW[window], window=window)


def _gaussian_1d(window: int, sigma: float, device: torch.device) -> Tensor:
    coords = torch.arange(window, dtype=torch.float32, device=device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur per channel, valid padding."""
    n, c, h, wd = x.shape
    w = g.numel()
    # Batch folded into channels: one depthwise conv over N*C maps is 2-4x faster on CPU
    # than the same conv with batch N and groups=C.
    x = x.reshape(1, n * c, h, wd)
    x = F.conv2d(x, g.view(1, 1, w, 1).expand(n * c, 1, w, 1), groups=n * c)
    x = F.conv2d(x, g.view(1, 1, 1, w).expand(n * c, 1, 1, w), groups=n * c)
    return x.view(n, c, h - w + 1, wd - w + 1)


def _ssim_cs(x: Tensor, y: Tensor, g: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term, each (B, C)."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    b = x.shape[0]
    # One conv call for all five local moments.
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).split(b)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    # E[x^2] - mu^2 can round below 0 on flat patches; a variance cannot.
    var_x = (e_xx - mu_xx).clamp_min(0)
    var_y = (e_yy - mu_yy).clamp_min(0)
    cov = e_xy - mu_xy
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def ssim(
    x: Tensor,
    y: Tensor,
    sigma: float = 1.5,
    window: int = 11,
    data_range: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Single-scale SSIM, averaged over channels and valid pixels; float32, in [-1, 1].

    ``reduction="none"`` returns one value per image (B,).
    """
    _check_pair(x, y)
    _check_reduction(reduction)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd int >= 3, got {window!r}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"image {x.shape[-2]}x{x.shape[-1]} is smaller than the window {window}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        g = _gaussian_1d(window, sigma, x.device)
        s, _ = _ssim_cs(x, y, g, data_range)
        return _reduce(s.mean(1), reduction)


def ms_ssim(
    x: Tensor,
    y: Tensor,
    settings: MSSSIMSettings | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-scale SSIM in [0, 1], differentiable, never NaN; computed in float32.

    ``settings=None`` uses ``MSSSIMSettings()`` (3 scales, sigma 1.5, window 11; fits
    >= 44 px). ``reduction="none"`` returns one value per image (B,).
    Raises ValueError if the shapes differ or the image is too small for the settings.
    """
    settings = MSSSIMSettings() if settings is None else settings
    _check_pair(x, y)
    _check_reduction(reduction)
    h, w = x.shape[-2:]
    if min(h, w) // 2 ** (settings.scales - 1) < settings.window:
        try:
            hint = f"settings_for_size({h}, {w}) gives {settings_for_size(h, w)}"
        except ValueError as err:
            hint = str(err)
        raise ValueError(
            f"image {h}x{w} is too small for MS-SSIM with scales={settings.scales}, "
            f"window={settings.window}: the short side must be >= {settings.min_side} "
            f"(window * 2**(scales-1)). Use fewer scales or a smaller window; {hint}"
        )
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        g = _gaussian_1d(settings.window, settings.sigma, x.device)
        betas = torch.tensor(settings.effective_betas, dtype=torch.float32, device=x.device)
        terms = []
        for scale in range(settings.scales):
            s, cs = _ssim_cs(x, y, g, settings.data_range)
            if scale < settings.scales - 1:
                terms.append(cs)
                x = F.avg_pool2d(x, 2, ceil_mode=True)
                y = F.avg_pool2d(y, 2, ceil_mode=True)
            else:
                terms.append(s)
        stacked = torch.stack(terms).clamp_min(_FLOOR)  # (M, B, C)
        per_channel = (stacked ** betas.view(-1, 1, 1)).prod(0)
        return _reduce(per_channel.mean(1), reduction)
