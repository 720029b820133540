"""The camera of a synthetic face image: lighting, colour cast, blur and sensor noise."""
import math

import numpy as np


_NOISE_CACHE = {}


def _noise_bank(height, width):
    """A fixed Gaussian noise field [3, 2H, 2W]; images take random crops of it.

    Drawing fresh normals for every pixel costs more than rendering the face; a
    randomly placed, randomly scaled crop of a fixed field looks the same to a
    network and stays deterministic.
    """
    key = (height, width)
    if key not in _NOISE_CACHE:
        rng = np.random.default_rng(12345)
        _NOISE_CACHE[key] = rng.standard_normal((3, 2 * height, 2 * width), dtype=np.float32)
    return _NOISE_CACHE[key]


def apply_camera(canvas, rng):
    """Lighting, colour cast, blur and noise; returns uint8 [3, H, W] RGB."""
    h, w = canvas.height, canvas.width
    phi = rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.0, 0.5)
    gain = np.exp(rng.normal(0.0, 0.22))
    cast = 1.0 + rng.normal(0.0, 0.07, 3)
    contrast = rng.uniform(0.7, 1.3)
    blur = rng.uniform() < 0.3
    sigma = rng.uniform(0.4, 1.3) * min(h, w) / 112.0
    noise_std = rng.uniform(0.5, 6.0)
    oy, ox = int(rng.integers(0, h + 1)), int(rng.integers(0, w + 1))
    # out = ((image * gradient * gain * cast) - 0.5) * contrast + 0.5, in [0, 255].
    gradient = canvas.x * np.float32(amp * gain * math.cos(phi)) + \
        canvas.y * np.float32(amp * gain * math.sin(phi))
    gradient += np.float32(gain)
    image = canvas.image
    image *= gradient
    if blur:
        image = _blur(image, sigma)
    image *= (cast * contrast * 255.0).astype(np.float32).reshape(3, 1, 1)
    image += np.float32((1.0 - contrast) * 127.5 + 0.5)
    image += _noise_bank(h, w)[:, oy:oy + h, ox:ox + w] * np.float32(noise_std)
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8)


def _blur(image, sigma):
    """Separable Gaussian blur of a planar [3, H, W] image, edges repeated."""
    radius = max(1, int(math.ceil(2.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    h, w = image.shape[1:]
    padded = np.pad(image, ((0, 0), (radius, radius), (0, 0)), mode='edge')
    out = padded[:, :h] * taps[0]
    for i in range(1, len(taps)):
        out += padded[:, i:i + h] * taps[i]
    padded = np.pad(out, ((0, 0), (0, 0), (radius, radius)), mode='edge')
    out = padded[:, :, :w] * taps[0]
    for i in range(1, len(taps)):
        out += padded[:, :, i:i + w] * taps[i]
    return out
