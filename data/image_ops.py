"""Image constants and preprocessing shared by training, verification and export.

One place decides the channel order and the normalisation, so that the TFRecord
parser, the `.bin` loader and the exported inference graph cannot drift apart.

Channel order is **BGR**, as in the original InsightFace_TF, which fed OpenCV's
BGR arrays to training and to evaluation alike; keeping it lets checkpoints
trained by the original be evaluated here unchanged. JPEGs decode to RGB, so
`decode_image` reverses the channels once, right after decoding.

Typical use:
    image = decode_image(jpeg_bytes)            # uint8 [H, W, 3], BGR
    net_input = normalize(tf.cast(image, tf.float32))
"""
import math

import numpy as np
import tensorflow.compat.v1 as tf

DEFAULT_IMAGE_SIZE = (112, 112)
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1/128: maps [0, 255] to [-0.996, 0.996]


def decode_rgb(encoded):
    """Decodes one JPEG or PNG string tensor to a uint8 [H, W, 3] tensor in RGB order.

    decode_image without its channel reversal: what the converters' decode
    check runs (data/image_files.py), as the reversal takes as long as a small
    JPEG's decoding and changes neither the shape nor whether it decodes.
    """
    return tf.cond(tf.image.is_jpeg(encoded),
                   lambda: tf.image.decode_jpeg(encoded, channels=3,
                                                dct_method='INTEGER_ACCURATE'),
                   lambda: tf.image.decode_png(encoded, channels=3))


def decode_image(encoded):
    """Decodes one JPEG or PNG string tensor to a uint8 [H, W, 3] BGR tensor.

    JPEGs decode with libjpeg's accurate integer DCT, as OpenCV's imdecode (the
    decoder of MXNet and of the original's .bin reader) and the original's
    tf.image.decode_jpeg do: the pixels are OpenCV's, bit for bit.
    tf.image.decode_image would pick the fast DCT, which moves about two
    thirds of the values by 1 and some by up to 17 levels.
    """
    return tf.reverse(decode_rgb(encoded), axis=[-1])


def normalize(images):
    """Maps raw pixel values to the network's input range.

    Args:
      images: uint8 or float tensor (or numpy array) of raw values in [0, 255].
    Returns:
      float32 of the same shape, (x - 127.5) * 0.0078125.
    """
    if isinstance(images, tf.Tensor):
        return (tf.cast(images, tf.float32) - PIXEL_MEAN) * PIXEL_SCALE
    return (images.astype('float32') - PIXEL_MEAN) * PIXEL_SCALE


def resize_for_network(images, net_input_size):
    """Shrinks a batch of normalised images to the network's input size, by area.

    Training batches and verification sets both pass through here (see
    --net_input_size), so a model sees the same reduction at every stage.

    Args:
      images: float tensor [N, H, W, C] with static H and W.
      net_input_size: (height, width), or None for no change.
    Returns:
      float tensor [N, height, width, C]; `images` itself when the sizes agree.
    """
    if net_input_size is None:
        return images
    height, width = images.get_shape().as_list()[1:3]
    new_height, new_width = net_input_size
    if (height, width) == (new_height, new_width):
        return images
    if height % new_height == 0 and width % new_width == 0:
        # Whole factors: the area average is an average pool, a standard
        # operator on every backend (Ascend's AvgPool included).
        window = [1, height // new_height, width // new_width, 1]
        return tf.nn.avg_pool(images, window, window, 'VALID')
    # Other factors: tf.image.resize_area's arithmetic as two fixed matrix products.
    # ResizeArea itself has no exact ONNX form (tf2onnx writes a nearest-neighbour
    # Resize, another network), while MatMul is exact in every runtime and converter.
    rows = tf.constant(area_weights(height, new_height))  # [new_height, height]
    columns = tf.constant(area_weights(width, new_width))  # [new_width, width]
    shrunk = tf.tensordot(images, rows, axes=[[1], [1]])  # [N, W, C, new_height]
    shrunk = tf.tensordot(shrunk, columns, axes=[[1], [1]])  # [N, C, new_height, new_width]
    return tf.transpose(shrunk, [0, 2, 3, 1])


def area_weights(size, new_size):
    """float32 [new_size, size]: row i averages the input pixels under output pixel i.

    Output pixel i covers input [i * f, (i + 1) * f), f = size / new_size; each input
    pixel counts by the part of it inside (tf.image.resize_area without align_corners).
    """
    scale = float(size) / new_size
    weights = [[0.0] * size for _ in range(new_size)]
    for i in range(new_size):
        start, end = i * scale, (i + 1) * scale
        for j in range(int(start), min(size, int(math.ceil(end)))):
            weights[i][j] = (min(j + 1.0, end) - max(float(j), start)) / scale
    return np.array(weights, np.float32)


def parse_image_size(text):
    """Parses '112,112' (height,width) into a tuple of two positive ints.

    Raises:
      ValueError: naming the text and the expected form.
    """
    try:
        parts = tuple(int(p) for p in str(text).split(','))
    except ValueError:
        parts = ()
    if len(parts) != 2 or min(parts) <= 0:
        raise ValueError('image size %r: expected "height,width" with two positive '
                         'integers, e.g. 112,112' % (text,))
    return parts
