"""The drawing surface of a synthetic face: a planar float image, soft shapes, upsampling.

Canonical face coordinates: the image spans [-1, 1] on both axes (u to the right,
v down). A Canvas maps them to pixels under one pose; each shape is evaluated
only inside its own bounding window, which keeps rendering cheap.
"""
import math

import numpy as np


def rgb(colour):
    """(3,) colour -> float32 (3, 1, 1), broadcastable over a planar window."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


class Canvas(object):
    """A planar float32 RGB image [3, H, W] plus the face <-> pixel maps of one pose.

    Planar, because numpy loops fastest over the last axis: with the channel last
    every blend would run an inner loop of length 3.
    """

    def __init__(self, height, width, pose):
        self.height, self.width = height, width
        self.image = np.empty((3, height, width), np.float32)
        c, s = math.cos(pose['angle']), math.sin(pose['angle'])
        k = pose['scale']
        # Forward map face (u, v) -> normalised image (x, y): k * R * (u, v) + t.
        self._fwd = (k * c, -k * s, pose['tx'], k * s, k * c, pose['ty'])
        x, y = _pixel_grid(height, width)
        self.x, self.y = x, y  # image coordinates, for layers that ignore the pose
        dx, dy = x - np.float32(pose['tx']), y - np.float32(pose['ty'])
        self.u = (dx * np.float32(c / k) + dy * np.float32(s / k))
        self.v = (dy * np.float32(c / k) - dx * np.float32(s / k))
        # Soft edges one pixel wide, measured in face units.
        self.edge = 2.0 / (min(height, width) * k)

    def window(self, u0, u1, v0, v1, pose_free=False):
        """Pixel slices covering a face-space box (image-space if pose_free), or None."""
        mu, mv, hu, hv = (u0 + u1) / 2.0, (v0 + v1) / 2.0, (u1 - u0) / 2.0, (v1 - v0) / 2.0
        if pose_free:
            mx, my, hx, hy = mu, mv, hu, hv
        else:  # the image-space box around the rotated face-space box
            a, b, tx, c, d, ty = self._fwd
            mx, my = a * mu + b * mv + tx, c * mu + d * mv + ty
            hx, hy = abs(a) * hu + abs(b) * hv, abs(c) * hu + abs(d) * hv
        x0 = max(0, int(math.floor((mx - hx + 1.0) * self.width / 2.0)) - 1)
        x1 = min(self.width, int(math.ceil((mx + hx + 1.0) * self.width / 2.0)) + 1)
        y0 = max(0, int(math.floor((my - hy + 1.0) * self.height / 2.0)) - 1)
        y1 = min(self.height, int(math.ceil((my + hy + 1.0) * self.height / 2.0)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def coords(self, win, pose_free=False):
        """Broadcastable (u, v) (or image (x, y)) arrays of a window."""
        if pose_free:
            return self.x[:, win[1]], self.y[win[0], :]
        return self.u[win], self.v[win]

    def blend(self, win, alpha, colour, opacity=1.0):
        """Paints colour ((3,) or [3, h, w]) over the window with soft alpha [h, w]."""
        region = self.image[:, win[0], win[1]]
        if opacity != 1.0:
            alpha = alpha * np.float32(opacity)
        if not isinstance(colour, np.ndarray) or colour.ndim == 1:
            colour = rgb(colour)
        change = colour - region
        change *= alpha
        region += change


_GRID_CACHE = {}


def _pixel_grid(height, width):
    """Pixel centres in normalised image coordinates: x [1, W], y [H, 1] in (-1, 1)."""
    key = (height, width)
    if key not in _GRID_CACHE:
        x = (np.arange(width, dtype=np.float32) + 0.5) * np.float32(2.0 / width) - 1.0
        y = (np.arange(height, dtype=np.float32) + 0.5) * np.float32(2.0 / height) - 1.0
        _GRID_CACHE[key] = (x[None, :], y[:, None])
    return _GRID_CACHE[key]


def unit(x):
    """Clips to [0, 1] in place and returns x."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def ellipse(u, v, cx, cy, rx, ry, edge, angle=0.0, square=False):
    """Soft coverage in [0, 1] of a (rotated) ellipse or rounded rectangle."""
    du, dv = u - np.float32(cx), v - np.float32(cy)
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = du * np.float32(c / rx) + dv * np.float32(s / rx), \
            dv * np.float32(c / ry) - du * np.float32(s / ry)
    else:
        du *= np.float32(1.0 / rx)
        dv *= np.float32(1.0 / ry)
    du *= du
    dv *= dv
    if square:  # superellipse |a|^4 + |b|^4: a rounded rectangle
        du *= du
        dv *= dv
        k = min(rx, ry) / (4.0 * edge)
    else:
        k = min(rx, ry) / (2.0 * edge)
    # (1 - r) * k, with r = du + dv; near the rim r changes by ~2 per radius.
    du += dv
    du *= np.float32(-k)
    du += np.float32(k)
    return unit(du)


def paint_ellipse(canvas, cx, cy, rx, ry, colour, angle=0.0, opacity=1.0, square=False):
    reach = max(rx, ry) * (1.45 if square else 1.05)
    win = canvas.window(cx - reach, cx + reach, cy - reach, cy + reach)
    if win is None:
        return
    u, v = canvas.coords(win)
    canvas.blend(win, ellipse(u, v, cx, cy, rx, ry, canvas.edge, angle, square), colour, opacity)



_UPSAMPLE_CACHE = {}


def upsample(grid, h, w):
    """Bilinear upsampling of a small planar [3, gh, gw] grid to [3, h, w] by matmuls."""
    gh, gw = grid.shape[1:]
    key = (gh, gw, h, w)
    if key not in _UPSAMPLE_CACHE:
        _UPSAMPLE_CACHE[key] = (_interp_matrix(gh, h), _interp_matrix(gw, w).T.copy())
    ry, rx_t = _UPSAMPLE_CACHE[key]
    return np.matmul(np.matmul(ry, grid), rx_t)


def _interp_matrix(n_in, n_out):
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m
