"""The layers of a synthetic face image, drawn back to front on a Canvas.

Background, body, ears, face, eyes, nose, mouth, beard, hair, glasses and
occluders; `FaceGeometry` holds one image's layout (identity geometry plus yaw,
pitch and expression). Faces are laid out like insightface's 112x112 alignment
template (eyes at v = -0.08, u = +-0.31; nose tip v = 0.28; mouth v = 0.65).
"""
import math

import numpy as np

from data.synthetic.canvas import ellipse, paint_ellipse, rgb, unit, upsample

_OCCLUDERS = ('sunglasses', 'mask', 'hand', 'block', 'hat')


class FaceGeometry(object):
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
        below = unit(dv * np.float32(1.0 / self.ry))
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
        return unit(a)


def draw_background(canvas, rng):
    """Smooth muted colour field plus a few blobs and sometimes stripes."""
    grid = rng.uniform(-0.5, 0.5, (3, 4, 4)) * rng.uniform(0.1, 0.6)
    base = 0.5 * rng.uniform(0.05, 0.95, (3, 1, 1)) + 0.5 * rng.uniform(0.1, 0.9)
    canvas.image[:] = upsample((base + grid).astype(np.float32), canvas.height, canvas.width)
    for _ in range(int(rng.integers(0, 5))):
        cx, cy = (float(c) for c in rng.uniform(-1.0, 1.0, 2))
        rx, ry = (float(r) for r in rng.uniform(0.08, 0.5, 2))
        win = canvas.window(cx - rx * 1.45, cx + rx * 1.45, cy - ry * 1.45, cy + ry * 1.45,
                            pose_free=True)
        if win is None:
            continue
        x, y = canvas.coords(win, pose_free=True)
        alpha = ellipse(x, y, cx, cy, rx, ry, 2.0 / canvas.width,
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



def draw_body(canvas, p, rng):
    """Neck and shoulders in a random shirt colour."""
    neck = np.array(p['skin']) * 0.8
    paint_ellipse(canvas, 0.0, p['face_cy'] + p['face_ry'] * 0.9, p['face_rx'] * 0.55, 0.5, neck,
                  square=True)
    shirt = rng.uniform(0.0, 1.0, 3)
    paint_ellipse(canvas, 0.0, p['face_cy'] + p['face_ry'] + 0.75, 1.5, 0.62, shirt)


def draw_ears(canvas, p, g):
    skin = np.array(p['skin']) * 0.9
    for side in (-1.0, 1.0):
        cx = g.cx + side * (g.rx * 0.97) - g.fx * 0.3
        paint_ellipse(canvas, cx, g.cy + p['ear_v'], p['ear_ry'] * 0.55, p['ear_ry'], skin,
                      angle=side * 0.15)


def draw_face(canvas, p, g):
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
    shade = unit(a)
    shade *= np.float32(-0.22)
    shade += 1.0
    canvas.blend(win, alpha, rgb(p['skin']) * shade)
    blush = (0.85, 0.35, 0.35)
    for side in (-1.0, 1.0):
        paint_ellipse(canvas, g.fx + side * (p['eye_dx'] + 0.04), p['nose_v'] + g.fy + 0.05,
                      0.12, 0.08, blush, opacity=p['blush'])
    for mu, mv, mr in p['moles']:
        paint_ellipse(canvas, g.fx + mu * g.rx / 0.7, mv + g.fy, mr, mr, (0.22, 0.14, 0.1),
                      opacity=0.85)


def draw_eyes(canvas, p, g):
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
            sclera = ellipse(u, v, ex, ey, rx, ry, canvas.edge, tilt)
            canvas.blend(win, sclera, (0.95, 0.95, 0.93))
            ir = rx * p['eye_ratio'] * p['iris_ratio']
            ix, iy = ex + g.gaze[0] * (rx - ir), ey + g.gaze[1] * ry * 0.5
            canvas.blend(win, ellipse(u, v, ix, iy, ir, ir, canvas.edge) * sclera, p['iris'])
            canvas.blend(win, ellipse(u, v, ix, iy, ir * 0.45, ir * 0.45, canvas.edge) * sclera,
                         (0.03, 0.03, 0.03))
            lid = ellipse(u, v, ex, ey - ry * 0.1, rx * 1.08, ry * 1.05 + 0.02, canvas.edge, tilt)
            lid *= 1.0 - sclera
            lid *= unit((np.float32(ey) - v) * np.float32(4.0 / rx))  # upper lid only
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
            alpha = ellipse(u, bent, bx, by, length, p['brow_thick'], canvas.edge,
                            side * p['brow_tilt'])
            canvas.blend(win, alpha, brow)


def draw_nose(canvas, p, g):
    skin = np.array(p['skin'])
    nx, ny = g.fx * 1.2, p['nose_v'] + g.fy
    length = ny - p['eye_v']
    paint_ellipse(canvas, nx + p['nose_w'] * 0.5, ny - length * 0.45, p['nose_w'] * 0.3,
                  length * 0.5, skin * 0.6, opacity=p['nose_shadow'])
    paint_ellipse(canvas, nx, ny - 0.02, p['nose_w'], p['nose_w'] * 0.7, skin * 0.85, opacity=0.6)
    for side in (-1.0, 1.0):
        paint_ellipse(canvas, nx + side * p['nose_w'] * 0.5, ny + 0.01, p['nose_w'] * 0.28,
                      p['nose_w'] * 0.16, skin * 0.35, opacity=0.85)


def draw_mouth(canvas, p, g):
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
    canvas.blend(win, ellipse(u, bent, mx, my, mw, lh, canvas.edge), p['lips'])
    if g.mouth_open:
        inner = ellipse(u, bent, mx, my, mw * 0.8, lh * 0.7 * g.mouth_open, canvas.edge)
        canvas.blend(win, inner, (0.22, 0.05, 0.05))
        teeth = inner * unit((np.float32(my - 0.2 * lh) - bent) * np.float32(2.0 / canvas.edge))
        canvas.blend(win, teeth, (0.95, 0.95, 0.9))
    else:
        line = ellipse(u, bent, mx, my, mw * 0.95, canvas.edge * 1.2, canvas.edge)
        canvas.blend(win, line, np.array(p['lips']) * 0.45)


def draw_beard(canvas, p, g):
    style = p['beard']
    if style == 'none':
        return
    colour = np.array(p['hair']) * 0.85
    mx, my = g.fx, p['mouth_v'] + g.fy
    if style in ('moustache', 'full'):
        paint_ellipse(canvas, mx, my - p['lip_h'] - 0.035, p['mouth_w'] * 1.05, 0.045, colour)
    if style == 'goatee':
        paint_ellipse(canvas, mx, my + 0.17, p['mouth_w'] * 0.55, 0.12, colour)
    if style in ('full', 'stubble'):
        reach = max(g.rx, g.ry) * 1.05
        win = canvas.window(g.cx - reach, g.cx + reach, my - 0.3, g.cy + reach)
        if win is None:
            return
        u, v = canvas.coords(win)
        jaw = g.alpha(u, v, canvas.edge, grow=0.02)
        jaw *= unit((v - np.float32(my - 0.12)) * np.float32(20.0))
        jaw *= 1.0 - ellipse(u, v, mx, my, p['mouth_w'] * 1.1, p['lip_h'] * 1.6, canvas.edge)
        canvas.blend(win, jaw, colour, opacity=0.9 if style == 'full' else 0.35)


def draw_hair(canvas, p, g, back):
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
        alpha = ellipse(u, v, g.cx, cy, rx, ry, canvas.edge, square=style == 'long')
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
    under = unit((v - line) * np.float32(0.5 / canvas.edge))
    under *= g.alpha(u, v, canvas.edge)
    cap = ellipse(u, v, g.cx, cy, rx, ry, canvas.edge)
    cap *= 1.0 - under
    canvas.blend(win, cap, _hair_colour(p, u, v))


def _hair_colour(p, u, v):
    """Hair colour with streaks, so hair has some texture: [3, h, w]."""
    streaks = np.sin(u * np.float32(p['hair_streaks']) + v * np.float32(3.0))
    streaks *= np.float32(0.08)
    streaks += 1.0
    return rgb(p['hair']) * streaks


def draw_glasses(canvas, p, g):
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
        inner = ellipse(u, v, ex, ey, rx, ry, canvas.edge, square=sq)
        canvas.blend(win, inner, (0.05, 0.05, 0.08), opacity=p['glasses_tint'])
        ring = ellipse(u, v, ex, ey, rx + t, ry + t, canvas.edge, square=sq)
        ring *= 1.0 - inner
        canvas.blend(win, ring, frame)
        if arm > 0:  # temple arm towards the ear
            paint_ellipse(canvas, ex + side * (rx + arm), ey - ry * 0.3, arm + t, t * 0.7, frame,
                          square=True)
    paint_ellipse(canvas, g.fx, ey - ry * 0.3, p['eye_dx'] - rx, t * 0.8, frame, square=True)


def draw_occluder(canvas, g, rng):
    """One of: sunglasses, a face mask, a hand, a block, a hat."""
    kind = _OCCLUDERS[int(rng.integers(len(_OCCLUDERS)))]
    colour = rng.uniform(0.0, 1.0, 3)
    if kind == 'sunglasses':
        paint_ellipse(canvas, g.fx, -0.08 + g.fy, 0.52, 0.12, (0.04, 0.04, 0.05), square=True)
    elif kind == 'mask':
        paint_ellipse(canvas, g.fx, 0.62, g.rx * 0.95, 0.4, colour * 0.3 + 0.65, square=True)
    elif kind == 'hat':
        paint_ellipse(canvas, g.cx, g.cy - g.ry - 0.05, g.rx * 1.25, 0.45, colour, square=True)
    else:
        cx, cy = (float(c) for c in rng.uniform(-1.0, 1.0, 2))
        rx, ry = (float(r) for r in rng.uniform(0.15, 0.4, 2))
        tone = (0.85, 0.62, 0.5) if kind == 'hand' else colour
        paint_ellipse(canvas, cx, cy, rx, ry, tone, angle=float(rng.uniform(-1.5, 1.5)),
                      square=kind == 'block')
