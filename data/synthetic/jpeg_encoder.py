"""JPEG and PNG encoding of rendered BGR images with TensorFlow, in a private graph."""
import numpy as np
import tensorflow.compat.v1 as tf

ENCODE_BATCH = 64  # images per session call (and per rendering chunk)


class JpegEncoder(object):
    """Encodes BGR uint8 images to JPEG (or PNG) bytes with TensorFlow.

    A private graph and session, so callers' graphs are untouched and this works
    whether or not the process runs TF in graph mode. Channels are reversed
    before encoding, so `data.image_ops.decode_image` gives the BGR image back.
    """

    def __init__(self, quality=90, batch_size=ENCODE_BATCH):
        self._batch_size = batch_size
        self._graph = tf.Graph()
        with self._graph.as_default():
            # A fixed batch of per-image encoders (one session call per batch);
            # short batches are padded. tf.map_fn would do, but warns on TF 2.
            self._batch = tf.placeholder(tf.uint8, [batch_size, None, None, 3], name='bgr_batch')
            self._jpegs = [tf.image.encode_jpeg(rgb, quality=quality)
                           for rgb in tf.unstack(tf.reverse(self._batch, axis=[-1]))]
            self._image = tf.placeholder(tf.uint8, [None, None, 3], name='bgr_image')
            self._png = tf.image.encode_png(tf.reverse(self._image, axis=[-1]))
        self._session = tf.Session(graph=self._graph)

    def encode(self, images):
        """Encodes uint8 BGR images [N, H, W, 3] (or a list of [H, W, 3]); returns N bytes."""
        images = np.asarray(images, np.uint8)
        jpegs = []
        for start in range(0, len(images), self._batch_size):
            batch = images[start:start + self._batch_size]
            count = len(batch)
            if count < self._batch_size:
                pad = np.zeros((self._batch_size - count,) + batch.shape[1:], np.uint8)
                batch = np.concatenate([batch, pad])
            jpegs.extend(self._session.run(self._jpegs, {self._batch: batch})[:count])
        return jpegs

    def encode_png(self, image):
        """Encodes one uint8 BGR image [H, W, 3] as PNG bytes."""
        return self._session.run(self._png, {self._image: image})

    def close(self):
        self._session.close()
