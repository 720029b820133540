"""Synthetic face images: one image of an identity, a batch of them, a contact sheet.

An image renders an identity's parameters (data/synthetic/identities.py) under
random nuisance: pose (rotation, translation, scale, a little yaw and pitch),
expression (smile, open mouth, eye openness, gaze), clothing, background clutter,
occluders, lighting (gain, contrast, a directional gradient, colour cast), blur,
sensor noise. The nuisance is large at the pixel level (a few pixels of
translation, strong lighting gradients, clutter), so comparing raw pixels does
not solve verification, while identities stay apart in a feature sense.

Typical use:
    from data.synthetic import identities, render
    stream = identities.TRAIN_STREAM
    identity = identities.sample_identity(identities.identity_rng(seed=0, stream=stream, index=7))
    image = render.render_face(identity, identities.image_rng(0, stream, 7, 0), (112, 112))
    # image: uint8 [112, 112, 3], BGR; or, for many at once:
    images = render.render_images(0, stream, [(7, 0), (7, 1), (8, 0)], (112, 112))
"""
import numpy as np

from data.synthetic.camera import apply_camera
from data.synthetic.canvas import Canvas
from data.synthetic.identities import identity_rng, image_rng, sample_identity
from data.synthetic.parts import (
    FaceGeometry, draw_background, draw_body, draw_beard, draw_ears, draw_eyes, draw_face,
    draw_glasses, draw_hair, draw_mouth, draw_nose, draw_occluder)


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
    canvas = Canvas(height, width, pose)
    draw_background(canvas, rng)
    draw_body(canvas, identity, rng)
    face = FaceGeometry(identity, pose, rng)
    if identity['hair_style'] in ('long', 'puffy'):
        draw_hair(canvas, identity, face, back=True)
    draw_ears(canvas, identity, face)
    draw_face(canvas, identity, face)
    draw_eyes(canvas, identity, face)
    draw_nose(canvas, identity, face)
    draw_mouth(canvas, identity, face)
    draw_beard(canvas, identity, face)
    draw_hair(canvas, identity, face, back=False)
    if identity['glasses'] and rng.uniform() < 0.9:  # now and then taken off
        draw_glasses(canvas, identity, face)
    if rng.uniform() < 0.15:
        draw_occluder(canvas, face, rng)
    planar_rgb = apply_camera(canvas, rng)
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
