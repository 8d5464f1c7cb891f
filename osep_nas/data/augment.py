"""Batch-wise augmentation on the batch's own device, every draw from a seeded generator."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["derive_seed", "BatchTransform", "Cutout"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs, platforms and devices)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


class BatchTransform:
    """Augment a float batch (N, C, H, W) in [0, 1] on its own device.

    Steps in order: crop (``"pad"``: zero-pad ``padding`` and crop back at random;
    ``"resized"``: random resized crop, scale 0.08-1, ratio 3/4-4/3, to ``size``),
    horizontal flip, color jitter (brightness, contrast, saturation factors drawn from
    [1-s, 1+s], in that order), normalization, cutout (a ``cutout`` square zeroed after
    normalization, i.e. set to the mean; its center may lie anywhere, as in DARTS).
    All draws come from the generator passed in, in a fixed order.
    """

    def __init__(self, crop: str = "none", padding: int = 0, size: Optional[int] = None, flip: bool = False,
                 color_jitter: float = 0.0, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, cutout: int = 0,
                 scale: Tuple[float, float] = (0.08, 1.0), ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        if crop not in ("pad", "resized", "none"):
            raise ValueError(f"crop must be pad, resized or none, got {crop!r}")
        self.crop, self.padding, self.size, self.flip = crop, int(padding), size, bool(flip)
        self.color_jitter, self.cutout = float(color_jitter), int(cutout)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.scale, self.ratio = scale, ratio

    def __repr__(self) -> str:
        return (f"BatchTransform(crop={self.crop!r}, padding={self.padding}, size={self.size}, flip={self.flip}, "
                f"color_jitter={self.color_jitter}, cutout={self.cutout}, normalize={self.mean is not None})")

    def __call__(self, x: torch.Tensor, g: Optional[torch.Generator] = None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=dev)

        if self.crop == "pad" and self.padding > 0 and n:
            p = self.padding
            padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # N, H+2p, W+2p, C
            oy = torch.randint(0, 2 * p + 1, (n,), generator=g, device=dev)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=g, device=dev)
            rows = oy[:, None] + torch.arange(h, device=dev)
            cols = ox[:, None] + torch.arange(w, device=dev)
            b = torch.arange(n, device=dev)
            x = padded[b[:, None, None], rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
        elif self.crop == "resized" and n:
            x = self._resized_crop(x, rand)
        if self.size is not None and (x.shape[-2] != self.size or x.shape[-1] != self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.flip and n:
            do = rand(n) < 0.5
            x = torch.where(do[:, None, None, None], x.flip(3), x)
        if self.color_jitter > 0 and n:
            x = self._jitter(x, rand)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        if self.cutout > 0 and n:
            hh, ww = x.shape[-2:]
            cy = torch.randint(0, hh, (n,), generator=g, device=dev)
            cx = torch.randint(0, ww, (n,), generator=g, device=dev)
            y0, x0 = cy - self.cutout // 2, cx - self.cutout // 2
            r = torch.arange(hh, device=dev)[None, :]
            c = torch.arange(ww, device=dev)[None, :]
            in_r = (r >= y0[:, None]) & (r < (y0 + self.cutout)[:, None])
            in_c = (c >= x0[:, None]) & (c < (x0 + self.cutout)[:, None])
            keep = ~(in_r[:, :, None] & in_c[:, None, :])
            x = x * keep[:, None].to(x.dtype)
        return x

    def _resized_crop(self, x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
        n, c, h, w = x.shape
        out = self.size or h
        tries = 10
        area = rand(n, tries) * (self.scale[1] - self.scale[0]) + self.scale[0]
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(rand(n, tries) * (hi - lo) + lo)
        cw = torch.sqrt(area * ratio) * w  # crop width / height in pixels
        ch = torch.sqrt(area / ratio) * h
        ok = (cw <= w) & (ch <= h)
        first = torch.argmax(ok.to(torch.int8), dim=1)  # first fitting try (0 when none fits)
        any_ok = ok.any(dim=1)
        cw = torch.where(any_ok, cw.gather(1, first[:, None])[:, 0], torch.full_like(cw[:, 0], float(w)))
        ch = torch.where(any_ok, ch.gather(1, first[:, None])[:, 0], torch.full_like(ch[:, 0], float(h)))
        x0 = rand(n) * (w - cw)
        y0 = rand(n) * (h - ch)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = cw / w
        theta[:, 1, 1] = ch / h
        theta[:, 0, 2] = (x0 + cw / 2) / w * 2 - 1
        theta[:, 1, 2] = (y0 + ch / 2) / h * 2 - 1
        grid = F.affine_grid(theta, [n, c, out, out], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        s = self.color_jitter
        lo = max(0.0, 1.0 - s)

        def factor() -> torch.Tensor:
            return (rand(n) * (1.0 + s - lo) + lo).view(n, 1, 1, 1)

        fb, fc, fs = factor(), factor(), factor()
        x = (x * fb).clamp(0, 1)
        if x.shape[1] == 3:
            wts = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            gray = (x * wts).sum(1, keepdim=True)
        else:
            gray = x.mean(1, keepdim=True)
        m = gray.mean(dim=(2, 3), keepdim=True)
        x = ((x - m) * fc + m).clamp(0, 1)
        gray = (x * wts).sum(1, keepdim=True) if x.shape[1] == 3 else x.mean(1, keepdim=True)
        return ((x - gray) * fs + gray).clamp(0, 1)



class Cutout:
    """Cutout for one CHW tensor (ImageFolder pipeline), drawn from torch's global RNG."""

    def __init__(self, length: int):
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(0, h, (1,)))
        cx = int(torch.randint(0, w, (1,)))
        y0, x0 = max(0, cy - self.length // 2), max(0, cx - self.length // 2)
        y1, x1 = min(h, cy - self.length // 2 + self.length), min(w, cx - self.length // 2 + self.length)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img
