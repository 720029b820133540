"""Who a synthetic face is: identity parameters drawn from per-identity seeds.

An *identity* is a random parameter vector (face shape, skin tone, eye, brow, nose
and mouth geometry, hair style and colour, ears, moles, glasses, beard). Identity
differences are large in a feature sense (geometry, colours, accessories), so a
network trained on many identities separates held-out ones.

Randomness comes only from the `numpy.random.Generator` passed in; `identity_rng`
and `image_rng` derive one per identity and per image from the dataset seed, so an
image does not depend on the order or the process it was rendered in.
"""
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
