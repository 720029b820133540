"""Augmentation of a training batch: geometric, photometric and random erasing ops.

Each op runs once per batch (a few ops, not a few per image) and is off by
default. Its randomness is the batch's `draws`, uniform numbers drawn per image
by the input pipeline (data/input_pipeline.py) from stateless seeds, so a seeded
pipeline gives the same batches however many threads run it.
"""
import tensorflow.compat.v1 as tf

# Uniform draws per element: [0] flip, [1] brightness, [2] contrast,
# [3:5] translation (y, x), [5:7] crop position (y, x), [7] crop side,
# [8:10] erased rectangle's sides (y, x), [10:12] its centre (y, x).
NUM_DRAWS = 12


def geometric(images, draws, height, width, max_translation, crop_scale):
    """Optional random translation and crop-and-resize of a batch, as one op.

    Each image gets a square box (side fraction from crop_scale, else 1) at a
    random position, moved by a whole number of pixels in [-max_translation,
    max_translation]; crop_and_resize samples it back to height x width. At
    side 1 the samples fall on pixel centres, so a translation is an exact
    shift; pixels shifted in from outside are 0 (black).

    Args:
      images: uint8 [B, height, width, 3].
      draws: float32 [B, NUM_DRAWS] uniform in [0, 1), the images' randomness.
    Returns:
      images unchanged if both options are off, else float32 [B, height, width, 3]
      in [0, 255].
    """
    if not (max_translation or crop_scale):
        return images
    if crop_scale:
        side = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * draws[:, 7]
    else:
        side = tf.ones_like(draws[:, 7])
    y0, x0 = draws[:, 5] * (1.0 - side), draws[:, 6] * (1.0 - side)
    if max_translation:
        shift = tf.floor(draws[:, 3:5] * (2 * max_translation + 1)) - max_translation
        # Box coordinates are in units of (size - 1) pixels.
        y0 += shift[:, 0] / max(height - 1, 1)
        x0 += shift[:, 1] / max(width - 1, 1)
    boxes = tf.stack([y0, x0, y0 + side, x0 + side], axis=1)
    return tf.image.crop_and_resize(images, boxes, box_indices=tf.range(tf.shape(images)[0]),
                                    crop_size=[height, width])


def photometric(images, draws, brightness_delta, contrast_range):
    """Optional per-image brightness and contrast jitter of a float batch.

    Like tf.image.adjust_brightness/adjust_contrast, the result is not clipped:
    jittered pixels may leave [0, 255] (and the normalised ones [-1, 1]).

    Args:
      images: float32 [B, H, W, 3] in [0, 255].
      draws: float32 [B, NUM_DRAWS], the images' randomness.
    Returns:
      float32 [B, H, W, 3] (unchanged if both options are off).
    """
    if contrast_range:
        lower, upper = contrast_range
        factor = (lower + (upper - lower) * draws[:, 2])[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        # (x - mean) * factor + mean, as one multiply and one add.
        images = images * factor + mean * (1.0 - factor)
    if brightness_delta:
        shift = (2.0 * draws[:, 1] - 1.0) * (brightness_delta * 255.0)
        images += shift[:, None, None, None]
    return images


def erase(images, draws, height, width, max_side):
    """Optional random erasing: one rectangle per image set to the image's mean colour.

    The rectangle hides a random part of the face (eyes, mouth, glasses, hair) in
    each step, so the model cannot lean on any single region.

    Args:
      images: float32 [B, height, width, 3].
      draws: float32 [B, NUM_DRAWS], the images' randomness.
      max_side: largest side as a fraction of the image's; 0 leaves images as they are.
    Returns:
      float32 [B, height, width, 3].
    """
    if not max_side:
        return images
    sides = max_side * (0.2 + 0.8 * draws[:, 8:10])  # (y, x) fractions in [max/5, max]
    centres = draws[:, 10:12]

    def inside(size, axis):
        # [B, size]: pixel centres within half a side of the rectangle's centre.
        position = (tf.range(size, dtype=tf.float32) + 0.5) / size
        return tf.abs(position[None, :] - centres[:, axis:axis + 1]) < sides[:, axis:axis + 1] / 2

    mask = tf.cast(tf.logical_and(inside(height, 0)[:, :, None], inside(width, 1)[:, None, :]),
                   tf.float32)[:, :, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return images + mask * (mean - images)
