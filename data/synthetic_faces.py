"""Procedural cartoon faces: the image synthesis behind the embedded synthetic dataset.

An *identity* is a random parameter vector (face shape, skin tone, eye, brow, nose
and mouth geometry, hair style and colour, ears, moles, glasses, beard). An
*image* of an identity renders those parameters under random nuisance: pose
(rotation, translation, scale, a little yaw and pitch), expression (smile, open
mouth, eye openness, gaze), clothing, background clutter, occluders, lighting
(gain, contrast, a directional gradient, colour cast), blur, sensor noise.

The balance is deliberate. Identity differences are large in a feature sense
(geometry, colours, accessories), so a network trained on many identities
separates held-out ones. The nuisance is large at the pixel level (a few pixels
of translation, strong lighting gradients, clutter), so comparing raw pixels
does not solve verification.

Everything is numpy and vectorised. Each part is evaluated only inside its own
bounding window, which keeps a 112x112 image under two milliseconds. Randomness
comes only from the `numpy.random.Generator` passed in; `identity_rng` and
`image_rng` derive one per identity and per image from the dataset seed, so an
image does not depend on the order or the process it was rendered in.

Canonical face coordinates: the image spans [-1, 1] on both axes (u to the
right, v down), laid out like insightface's 112x112 alignment template (eyes at
v = -0.08, u = +-0.31; nose tip v = 0.28; mouth v = 0.65).

Typical use:
    identity = sample_identity(identity_rng(seed=0, stream=TRAIN_STREAM, index=7))
    image = render_face(identity, image_rng(0, TRAIN_STREAM, 7, 0), (112, 112))
    # image: uint8 [112, 112, 3], BGR; or, for many at once:
    images = render_images(0, TRAIN_STREAM, [(7, 0), (7, 1), (8, 0)], (112, 112))
"""
import math

import numpy as np

# Seed streams keep the train and held-out populations apart: the same index in
# two streams gives unrelated identities.
TRAIN_STREAM = 1
VAL_STREAM = 2

# RGB in [0, 1]; converted to BGR only when an image is returned.
_SKIN_DARK = np.array([0.30, 0.19, 0.13])
_SKIN_LIGHT = np.array([0.97, 0.82, 0.70])
_HAIR_COLOURS = np.array([
    [0.07, 0.06, 0.06], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14],
    [0.82, 0.68, 0.42], [0.56, 0.23, 0.10], [0.60, 0.60, 0.60],
    [0.90, 0.88, 0.84], [0.20, 0.30, 0.72], [0.72, 0.26, 0.52],
    [0.22, 0.52, 0.32]])
_HAIR_WEIGHTS = np.array([22, 20, 16, 12, 8, 7, 4, 2, 2, 2], dtype=float)
_IRIS_COLOURS = np.array([
    [0.35, 0.20, 0.10], [0.14, 0.09, 0.06], [0.30, 0.52, 0.78],
    [0.30, 0.52, 0.30], [0.52, 0.56, 0.62], [0.52, 0.40, 0.20]])
_HAIR_STYLES = ('bald', 'short', 'side_part', 'long', 'bangs', 'puffy')
_HAIR_STYLE_WEIGHTS = np.array([6, 24, 20, 22, 16, 12], dtype=float)
_BEARD_STYLES = ('none', 'moustache', 'goatee', 'full', 'stubble')
_BEARD_STYLE_WEIGHTS = np.array([80, 5, 5, 5, 5], dtype=float)
_OCCLUDERS = ('sunglasses', 'mask', 'hand', 'block', 'hat')


def identity_rng(seed, stream, index):
    """Returns the Generator for identity `index` of `stream` under dataset `seed`."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


def image_rng(seed, stream, index, image_index):
    """Returns the Generator for one image of one identity (see `identity_rng`)."""
    return np.random.default_rng([int(seed), int(stream), int(index), 1 + int(image_index)])


def sample_identity(rng):
    """Draws one identity's parameters.

    Args:
      rng: numpy.random.Generator; it is advanced.
    Returns:
      dict of python floats, tuples of floats and strings (see the keys below);
      plain data, so it can be compared and logged.
    """
    def u(lo, hi):
        return float(rng.uniform(lo, hi))

    def colour(base, jitter):
        return tuple(float(c) for c in np.clip(base + rng.normal(0.0, jitter, 3), 0.0, 1.0))

    skin = _SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * rng.uniform(0.0, 1.0)
    skin = skin * np.array([1.0 + rng.normal(0, 0.05), 1.0, 1.0 - rng.normal(0, 0.05)])
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS / _HAIR_WEIGHTS.sum())]
    skin_c = colour(skin, 0.02)
    p = {
        'skin': skin_c,
        'hair': colour(hair, 0.05),
        'iris': colour(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 0.04),
        'lips': colour(np.array(skin_c) * 0.55 + np.array([0.75, 0.28, 0.30]) * u(0.1, 0.5), 0.03),
        'face_cy': u(0.04, 0.14), 'face_rx': u(0.58, 0.80), 'face_ry': u(0.78, 0.96),
        'jaw_taper': u(0.0, 0.45), 'ear_ry': u(0.12, 0.19), 'ear_v': u(-0.05, 0.12),
        'eye_dx': u(0.25, 0.36), 'eye_v': u(-0.14, -0.02), 'eye_rx': u(0.085, 0.14),
        'eye_ratio': u(0.40, 0.75), 'eye_tilt': u(-0.22, 0.22), 'iris_ratio': u(0.75, 1.0),
        'brow_gap': u(0.12, 0.22), 'brow_len': u(0.11, 0.22), 'brow_thick': u(0.018, 0.055),
        'brow_tilt': u(-0.3, 0.3), 'brow_arch': u(0.0, 0.07),
        'nose_v': u(0.16, 0.34), 'nose_w': u(0.06, 0.13), 'nose_shadow': u(0.1, 0.35),
        'mouth_v': u(0.52, 0.72), 'mouth_w': u(0.13, 0.27), 'lip_h': u(0.025, 0.07),
        'blush': u(0.0, 0.25),
        'hair_style': _HAIR_STYLES[rng.choice(len(_HAIR_STYLES),
                                              p=_HAIR_STYLE_WEIGHTS / _HAIR_STYLE_WEIGHTS.sum())],
        'hair_volume': u(0.04, 0.22), 'hairline': u(-0.70, -0.42), 'hairline_curve': u(0.1, 0.6),
        'part_tilt': u(-0.35, 0.35), 'hair_streaks': u(10.0, 40.0),
        'beard': _BEARD_STYLES[rng.choice(len(_BEARD_STYLES),
                                          p=_BEARD_STYLE_WEIGHTS / _BEARD_STYLE_WEIGHTS.sum())],
        'glasses': bool(rng.uniform() < 0.2), 'glasses_square': bool(rng.uniform() < 0.5),
        'glasses_size': u(1.15, 1.5), 'glasses_thick': u(0.014, 0.032),
        'glasses_tint': u(0.0, 0.1) if rng.uniform() < 0.8 else u(0.5, 0.85),
        'glasses_colour': colour(np.array([0.1, 0.1, 0.1]) if rng.uniform() < 0.6
                                 else rng.uniform(0.0, 1.0, 3), 0.03),
        'moles': tuple((u(-0.45, 0.45), u(-0.3, 0.7), u(0.015, 0.03))
                       for _ in range(int(rng.integers(0, 3)))),
    }
    return p


def render_face(identity, rng, image_size=(112, 112)):
    """Renders one image of `identity` under nuisance drawn from `rng`.

    Args:
      identity: dict from `sample_identity`.
      rng: numpy.random.Generator for this image; it is advanced.
      image_size: (height, width) in pixels, each >= 8.
    Returns:
      uint8 numpy array [height, width, 3] in BGR order.
    Raises:
      ValueError: if image_size is not two integers >= 8.
    """
    height, width = _check_size(image_size)
    pose = _sample_pose(rng)
    canvas = _Canvas(height, width, pose)
    _draw_background(canvas, rng)
    _draw_body(canvas, identity, rng)
    face = _FaceGeometry(identity, pose, rng)
    if identity['hair_style'] in ('long', 'puffy'):
        _draw_hair(canvas, identity, face, back=True)
    _draw_ears(canvas, identity, face)
    _draw_face(canvas, identity, face)
    _draw_eyes(canvas, identity, face)
    _draw_nose(canvas, identity, face)
    _draw_mouth(canvas, identity, face)
    _draw_beard(canvas, identity, face)
    _draw_hair(canvas, identity, face, back=False)
    if identity['glasses'] and rng.uniform() < 0.9:  # now and then taken off
        _draw_glasses(canvas, identity, face)
    if rng.uniform() < 0.15:
        _draw_occluder(canvas, face, rng)
    planar_rgb = _apply_camera(canvas, rng)
    return np.ascontiguousarray(planar_rgb[::-1].transpose(1, 2, 0))


def render_images(seed, stream, items, image_size=(112, 112)):
    """Renders a batch of images, each from its own seed.

    Args:
      seed: dataset seed (int >= 0).
      stream: TRAIN_STREAM, VAL_STREAM or another int naming an identity pool.
      items: sequence of (identity index, image index) pairs.
      image_size: (height, width), each >= 8.
    Returns:
      uint8 numpy array [len(items), height, width, 3], BGR. Image n depends only
      on (seed, stream, items[n], image_size), not on the batch it came in.
    """
    height, width = _check_size(image_size)
    out = np.empty((len(items), height, width, 3), np.uint8)
    identities = {}
    for n, (identity, index) in enumerate(items):
        if identity not in identities:
            identities[identity] = sample_identity(identity_rng(seed, stream, identity))
        out[n] = render_face(identities[identity], image_rng(seed, stream, identity, index),
                             (height, width))
    return out


def contact_sheet(images, columns=8, gap=2):
    """Tiles equally sized images into one grid for viewing.

    Args:
      images: sequence of uint8 arrays [H, W, 3] (any channel order, kept as is).
      columns: images per row.
      gap: pixels of white between tiles.
    Returns:
      uint8 array [rows * (H + gap) + gap, columns * (W + gap) + gap, 3].
    """
    images = list(images)
    if not images:
        raise ValueError('contact_sheet: got no images; expected at least one')
    h, w = images[0].shape[:2]
    rows = (len(images) + columns - 1) // columns
    sheet = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[gap + r * (h + gap):gap + r * (h + gap) + h,
              gap + c * (w + gap):gap + c * (w + gap) + w] = image
    return sheet


def _check_size(image_size):
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        height = width = 0
    if min(height, width) < 8:
        raise ValueError('image_size %r: expected (height, width) with both >= 8' % (image_size,))
    return height, width


def _sample_pose(rng):
    """Similarity transform from face to image coordinates, plus yaw/pitch shifts."""
    return {
        'angle': float(np.clip(rng.normal(0.0, 0.10), -0.26, 0.26)),
        'scale': float(np.exp(np.clip(rng.normal(0.0, 0.06), -0.15, 0.15))),
        'tx': float(np.clip(rng.normal(0.0, 0.055), -0.13, 0.13)),
        'ty': float(np.clip(rng.normal(0.0, 0.045), -0.11, 0.11)),
        # Turning the head moves the inner features against the outline.
        'yaw': float(np.clip(rng.normal(0.0, 0.05), -0.12, 0.12)),
        'pitch': float(np.clip(rng.normal(0.0, 0.03), -0.08, 0.08)),
    }


def _rgb(colour):
    """(3,) colour -> float32 (3, 1, 1), broadcastable over a planar window."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


class _Canvas(object):
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
            colour = _rgb(colour)
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


def _unit(x):
    """Clips to [0, 1] in place and returns x."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _ellipse(u, v, cx, cy, rx, ry, edge, angle=0.0, square=False):
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
    return _unit(du)


def _paint_ellipse(canvas, cx, cy, rx, ry, colour, angle=0.0, opacity=1.0, square=False):
    reach = max(rx, ry) * (1.45 if square else 1.05)
    win = canvas.window(cx - reach, cx + reach, cy - reach, cy + reach)
    if win is None:
        return
    u, v = canvas.coords(win)
    canvas.blend(win, _ellipse(u, v, cx, cy, rx, ry, canvas.edge, angle, square), colour, opacity)


class _FaceGeometry(object):
    """Per-image face layout: identity geometry plus yaw/pitch and expression."""

    def __init__(self, p, pose, rng):
        self.cx = pose['yaw'] * 0.25
        self.cy = p['face_cy']
        self.rx, self.ry = p['face_rx'], p['face_ry']
        # Inner features move further than the outline when the head turns.
        self.fx = pose['yaw'] * 0.8
        self.fy = pose['pitch']
        self.smile = float(rng.uniform(-0.25, 1.0))
        self.mouth_open = float(rng.uniform(0.15, 1.0)) if rng.uniform() < 0.25 else 0.0
        self.eye_open = 0.15 if rng.uniform() < 0.05 else float(rng.uniform(0.7, 1.1))
        self.gaze = (float(rng.normal(0.0, 0.25)), float(rng.normal(0.0, 0.15)))
        self.brow_raise = float(rng.normal(0.0, 0.02))
        self.hair_jitter = float(rng.normal(0.0, 0.015))
        self.taper = p['jaw_taper']

    def alpha(self, u, v, edge, grow=0.0):
        """Face outline coverage; the jaw narrows towards the chin."""
        dv = v - np.float32(self.cy)
        below = _unit(dv * np.float32(1.0 / self.ry))
        below *= below
        below *= np.float32(-self.taper)
        below += 1.0
        a = (u - np.float32(self.cx)) / (below * np.float32(self.rx + grow))
        b = dv * np.float32(1.0 / (self.ry + grow))
        k = self.rx / (2.0 * edge)
        a *= a
        b *= b
        a += b
        a *= np.float32(-k)
        a += np.float32(k)
        return _unit(a)


def _draw_background(canvas, rng):
    """Smooth muted colour field plus a few blobs and sometimes stripes."""
    grid = rng.uniform(-0.5, 0.5, (3, 4, 4)) * rng.uniform(0.1, 0.6)
    base = 0.5 * rng.uniform(0.05, 0.95, (3, 1, 1)) + 0.5 * rng.uniform(0.1, 0.9)
    canvas.image[:] = _upsample((base + grid).astype(np.float32), canvas.height, canvas.width)
    for _ in range(int(rng.integers(0, 5))):
        cx, cy = (float(c) for c in rng.uniform(-1.0, 1.0, 2))
        rx, ry = (float(r) for r in rng.uniform(0.08, 0.5, 2))
        win = canvas.window(cx - rx * 1.45, cx + rx * 1.45, cy - ry * 1.45, cy + ry * 1.45,
                            pose_free=True)
        if win is None:
            continue
        x, y = canvas.coords(win, pose_free=True)
        alpha = _ellipse(x, y, cx, cy, rx, ry, 2.0 / canvas.width,
                         float(rng.uniform(-1.5, 1.5)), square=bool(rng.uniform() < 0.5))
        colour = 0.6 * rng.uniform(0.0, 1.0, 3) + 0.4 * rng.uniform(0.1, 0.9)
        canvas.blend(win, alpha, colour, float(rng.uniform(0.5, 1.0)))
    if rng.uniform() < 0.25:
        f = rng.uniform(6.0, 25.0)
        angle = rng.uniform(0.0, math.pi)
        stripes = np.sin(canvas.x * np.float32(f * math.cos(angle)) +
                         canvas.y * np.float32(f * math.sin(angle)))
        stripes *= np.float32(rng.uniform(0.05, 0.2))
        stripes += 1.0
        canvas.image *= stripes


_UPSAMPLE_CACHE = {}


def _upsample(grid, h, w):
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


def _draw_body(canvas, p, rng):
    """Neck and shoulders in a random shirt colour."""
    neck = np.array(p['skin']) * 0.8
    _paint_ellipse(canvas, 0.0, p['face_cy'] + p['face_ry'] * 0.9, p['face_rx'] * 0.55, 0.5, neck,
                   square=True)
    shirt = rng.uniform(0.0, 1.0, 3)
    _paint_ellipse(canvas, 0.0, p['face_cy'] + p['face_ry'] + 0.75, 1.5, 0.62, shirt)


def _draw_ears(canvas, p, g):
    skin = np.array(p['skin']) * 0.9
    for side in (-1.0, 1.0):
        cx = g.cx + side * (g.rx * 0.97) - g.fx * 0.3
        _paint_ellipse(canvas, cx, g.cy + p['ear_v'], p['ear_ry'] * 0.55, p['ear_ry'], skin,
                       angle=side * 0.15)


def _draw_face(canvas, p, g):
    """Skin with a little 3-D shading, blush and moles."""
    reach = max(g.rx, g.ry) * 1.05
    win = canvas.window(g.cx - reach, g.cx + reach, g.cy - reach, g.cy + reach)
    if win is None:
        return
    u, v = canvas.coords(win)
    alpha = g.alpha(u, v, canvas.edge)
    a = (u - np.float32(g.cx)) * np.float32(1.0 / g.rx)
    b = (v - np.float32(g.cy)) * np.float32(1.0 / g.ry)
    a *= a
    b *= b
    a += b
    shade = _unit(a)
    shade *= np.float32(-0.22)
    shade += 1.0
    canvas.blend(win, alpha, _rgb(p['skin']) * shade)
    blush = (0.85, 0.35, 0.35)
    for side in (-1.0, 1.0):
        _paint_ellipse(canvas, g.fx + side * (p['eye_dx'] + 0.04), p['nose_v'] + g.fy + 0.05,
                       0.12, 0.08, blush, opacity=p['blush'])
    for mu, mv, mr in p['moles']:
        _paint_ellipse(canvas, g.fx + mu * g.rx / 0.7, mv + g.fy, mr, mr, (0.22, 0.14, 0.1),
                       opacity=0.85)


def _draw_eyes(canvas, p, g):
    """Sclera, iris, pupil, lid line and eyebrow on each side."""
    ey = p['eye_v'] + g.fy
    brow = np.array(p['hair']) * 0.75
    for side in (-1.0, 1.0):
        ex = g.fx + side * p['eye_dx']
        rx = p['eye_rx']
        ry = rx * p['eye_ratio'] * g.eye_open
        tilt = -side * p['eye_tilt']
        win = canvas.window(ex - rx * 1.2, ex + rx * 1.2, ey - rx * 1.2, ey + rx * 1.2)
        if win is not None:
            u, v = canvas.coords(win)
            sclera = _ellipse(u, v, ex, ey, rx, ry, canvas.edge, tilt)
            canvas.blend(win, sclera, (0.95, 0.95, 0.93))
            ir = rx * p['eye_ratio'] * p['iris_ratio']
            ix, iy = ex + g.gaze[0] * (rx - ir), ey + g.gaze[1] * ry * 0.5
            canvas.blend(win, _ellipse(u, v, ix, iy, ir, ir, canvas.edge) * sclera, p['iris'])
            canvas.blend(win, _ellipse(u, v, ix, iy, ir * 0.45, ir * 0.45, canvas.edge) * sclera,
                         (0.03, 0.03, 0.03))
            lid = _ellipse(u, v, ex, ey - ry * 0.1, rx * 1.08, ry * 1.05 + 0.02, canvas.edge, tilt)
            lid *= 1.0 - sclera
            lid *= _unit((np.float32(ey) - v) * np.float32(4.0 / rx))  # upper lid only
            canvas.blend(win, lid, (0.12, 0.08, 0.07))
        by = ey - p['brow_gap'] - g.brow_raise
        bx = ex + side * 0.02
        length = p['brow_len']
        win = canvas.window(bx - length * 1.1, bx + length * 1.1, by - length, by + length)
        if win is not None:
            u, v = canvas.coords(win)
            # Bending v by the distance from the centre gives the arch.
            du = (u - np.float32(bx)) * np.float32(1.0 / length)
            du *= du
            bent = v + np.float32(p['brow_arch']) * (1.0 - du)
            alpha = _ellipse(u, bent, bx, by, length, p['brow_thick'], canvas.edge,
                             side * p['brow_tilt'])
            canvas.blend(win, alpha, brow)


def _draw_nose(canvas, p, g):
    skin = np.array(p['skin'])
    nx, ny = g.fx * 1.2, p['nose_v'] + g.fy
    length = ny - p['eye_v']
    _paint_ellipse(canvas, nx + p['nose_w'] * 0.5, ny - length * 0.45, p['nose_w'] * 0.3,
                   length * 0.5, skin * 0.6, opacity=p['nose_shadow'])
    _paint_ellipse(canvas, nx, ny - 0.02, p['nose_w'], p['nose_w'] * 0.7, skin * 0.85, opacity=0.6)
    for side in (-1.0, 1.0):
        _paint_ellipse(canvas, nx + side * p['nose_w'] * 0.5, ny + 0.01, p['nose_w'] * 0.28,
                       p['nose_w'] * 0.16, skin * 0.35, opacity=0.85)


def _draw_mouth(canvas, p, g):
    """Lips bent into a smile; an open mouth shows a dark inside and teeth."""
    mx, my = g.fx, p['mouth_v'] + g.fy * 1.2
    mw, lh = p['mouth_w'], p['lip_h'] * (1.0 + 0.8 * g.mouth_open)
    win = canvas.window(mx - mw * 1.1, mx + mw * 1.1, my - mw * 0.8, my + mw * 0.8)
    if win is None:
        return
    u, v = canvas.coords(win)
    du = (u - np.float32(mx)) * np.float32(1.0 / mw)
    du *= du
    bent = v + np.float32(g.smile * 0.07) * du  # corners rise with the smile
    canvas.blend(win, _ellipse(u, bent, mx, my, mw, lh, canvas.edge), p['lips'])
    if g.mouth_open:
        inner = _ellipse(u, bent, mx, my, mw * 0.8, lh * 0.7 * g.mouth_open, canvas.edge)
        canvas.blend(win, inner, (0.22, 0.05, 0.05))
        teeth = inner * _unit((np.float32(my - 0.2 * lh) - bent) * np.float32(2.0 / canvas.edge))
        canvas.blend(win, teeth, (0.95, 0.95, 0.9))
    else:
        line = _ellipse(u, bent, mx, my, mw * 0.95, canvas.edge * 1.2, canvas.edge)
        canvas.blend(win, line, np.array(p['lips']) * 0.45)


def _draw_beard(canvas, p, g):
    style = p['beard']
    if style == 'none':
        return
    colour = np.array(p['hair']) * 0.85
    mx, my = g.fx, p['mouth_v'] + g.fy
    if style in ('moustache', 'full'):
        _paint_ellipse(canvas, mx, my - p['lip_h'] - 0.035, p['mouth_w'] * 1.05, 0.045, colour)
    if style == 'goatee':
        _paint_ellipse(canvas, mx, my + 0.17, p['mouth_w'] * 0.55, 0.12, colour)
    if style in ('full', 'stubble'):
        reach = max(g.rx, g.ry) * 1.05
        win = canvas.window(g.cx - reach, g.cx + reach, my - 0.3, g.cy + reach)
        if win is None:
            return
        u, v = canvas.coords(win)
        jaw = g.alpha(u, v, canvas.edge, grow=0.02)
        jaw *= _unit((v - np.float32(my - 0.12)) * np.float32(20.0))
        jaw *= 1.0 - _ellipse(u, v, mx, my, p['mouth_w'] * 1.1, p['lip_h'] * 1.6, canvas.edge)
        canvas.blend(win, jaw, colour, opacity=0.9 if style == 'full' else 0.35)


def _draw_hair(canvas, p, g, back):
    """The hair mass: behind the head (long/puffy) or on top of the forehead."""
    style = p['hair_style']
    if style == 'bald' and not back:
        return
    vol = p['hair_volume'] + g.hair_jitter
    if back:
        rx = g.rx + vol + (0.25 if style == 'puffy' else 0.08)
        top = g.cy - g.ry - vol - (0.2 if style == 'puffy' else 0.0)
        bottom = g.cy + g.ry * (0.5 if style == 'puffy' else 1.2)
        cy, ry = (top + bottom) / 2.0, (bottom - top) / 2.0
        win = canvas.window(g.cx - rx * 1.45, g.cx + rx * 1.45, cy - ry * 1.45, cy + ry * 1.45)
        if win is None:
            return
        u, v = canvas.coords(win)
        alpha = _ellipse(u, v, g.cx, cy, rx, ry, canvas.edge, square=style == 'long')
        canvas.blend(win, alpha, _hair_colour(p, u, v))
        return
    rx, ry = g.rx + vol * 0.6, g.ry * 0.62 + vol
    cy = g.cy - g.ry + ry * 0.95
    if style == 'puffy':
        rx, ry = rx + 0.12, ry + 0.12
    win = canvas.window(g.cx - rx * 1.05, g.cx + rx * 1.05, cy - ry * 1.05, g.cy + g.ry * 0.3)
    if win is None:
        return
    u, v = canvas.coords(win)
    # Hair covers the skull cap and the face above the hairline.
    du = u - np.float32(g.fx)
    line = np.float32(p['hairline_curve']) * du * du + np.float32(p['hairline'] + g.fy)
    if style == 'side_part':
        line += np.float32(p['part_tilt']) * du
    elif style == 'bangs':
        line += np.float32(0.28)
    elif style == 'short':
        line -= np.float32(0.04)
    under = _unit((v - line) * np.float32(0.5 / canvas.edge))
    under *= g.alpha(u, v, canvas.edge)
    cap = _ellipse(u, v, g.cx, cy, rx, ry, canvas.edge)
    cap *= 1.0 - under
    canvas.blend(win, cap, _hair_colour(p, u, v))


def _hair_colour(p, u, v):
    """Hair colour with streaks, so hair has some texture: [3, h, w]."""
    streaks = np.sin(u * np.float32(p['hair_streaks']) + v * np.float32(3.0))
    streaks *= np.float32(0.08)
    streaks += 1.0
    return _rgb(p['hair']) * streaks


def _draw_glasses(canvas, p, g):
    ey = p['eye_v'] + g.fy
    rx = p['eye_rx'] * p['glasses_size']
    ry = rx * 0.75
    t = p['glasses_thick']
    frame = p['glasses_colour']
    arm = (g.rx - p['eye_dx'] - rx) / 2.0
    for side in (-1.0, 1.0):
        ex = g.fx + side * p['eye_dx']
        win = canvas.window(ex - rx * 1.6, ex + rx * 1.6, ey - ry * 1.6, ey + ry * 1.6)
        if win is None:
            continue
        u, v = canvas.coords(win)
        sq = p['glasses_square']
        inner = _ellipse(u, v, ex, ey, rx, ry, canvas.edge, square=sq)
        canvas.blend(win, inner, (0.05, 0.05, 0.08), opacity=p['glasses_tint'])
        ring = _ellipse(u, v, ex, ey, rx + t, ry + t, canvas.edge, square=sq)
        ring *= 1.0 - inner
        canvas.blend(win, ring, frame)
        if arm > 0:  # temple arm towards the ear
            _paint_ellipse(canvas, ex + side * (rx + arm), ey - ry * 0.3, arm + t, t * 0.7, frame,
                           square=True)
    _paint_ellipse(canvas, g.fx, ey - ry * 0.3, p['eye_dx'] - rx, t * 0.8, frame, square=True)


def _draw_occluder(canvas, g, rng):
    """One of: sunglasses, a face mask, a hand, a block, a hat."""
    kind = _OCCLUDERS[int(rng.integers(len(_OCCLUDERS)))]
    colour = rng.uniform(0.0, 1.0, 3)
    if kind == 'sunglasses':
        _paint_ellipse(canvas, g.fx, -0.08 + g.fy, 0.52, 0.12, (0.04, 0.04, 0.05), square=True)
    elif kind == 'mask':
        _paint_ellipse(canvas, g.fx, 0.62, g.rx * 0.95, 0.4, colour * 0.3 + 0.65, square=True)
    elif kind == 'hat':
        _paint_ellipse(canvas, g.cx, g.cy - g.ry - 0.05, g.rx * 1.25, 0.45, colour, square=True)
    else:
        cx, cy = (float(c) for c in rng.uniform(-1.0, 1.0, 2))
        rx, ry = (float(r) for r in rng.uniform(0.15, 0.4, 2))
        tone = (0.85, 0.62, 0.5) if kind == 'hand' else colour
        _paint_ellipse(canvas, cx, cy, rx, ry, tone, angle=float(rng.uniform(-1.5, 1.5)),
                       square=kind == 'block')


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


def _apply_camera(canvas, rng):
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
