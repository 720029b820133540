"""The inference graph shared by validation, evaluation, feature extraction and export.

`inference_graph` turns raw uint8 BGR images into embeddings with the moving
batch-norm statistics and no dropout. Reads no flags.

Typical use:
    images, embedding = inference_graph(net_depth=50, image_size=(112, 112), batch_size=32)
    saver = tf.train.Saver(); saver.restore(sess, checkpoint)
"""
import tensorflow.compat.v1 as tf

from data import image_ops
from nets.L_Resnet_E_IR import BATCH, STANDARD, get_resnet

INPUT_NODE = 'input_images'
OUTPUT_NODE = 'embeddings'


def inference_graph(net_depth, image_size, batch_size=None, reuse=None, net_input_size=None,
                    variant=STANDARD, norm=BATCH):
    """Raw images in, embeddings out, with inference-mode batch norm.

    Args:
      net_depth: backbone depth.
      image_size: (height, width) of the images fed.
      batch_size: static batch size (the NPU needs static shapes), or None.
      reuse: True to share the variables of a training graph built before.
      net_input_size: (height, width) the network was trained at, if smaller
        than image_size (see image_ops.resize_for_network); None: image_size.
      variant: the backbone's width variant (nets.L_Resnet_E_IR.VARIANTS).
      norm: its normalisation (nets.L_Resnet_E_IR.NORMS).
    Returns:
      (images uint8 placeholder [batch, H, W, 3] BGR named INPUT_NODE,
       embedding float32 [batch, 512] named OUTPUT_NODE, not normalised).
    """
    images = tf.placeholder(tf.uint8, [batch_size, image_size[0], image_size[1], 3],
                            name=INPUT_NODE)
    net_input = image_ops.resize_for_network(image_ops.normalize(images), net_input_size)
    embedding, _ = get_resnet(net_input, net_depth, is_training=False, reuse=reuse,
                              variant=variant, norm=norm)
    return images, tf.identity(embedding, name=OUTPUT_NODE)
