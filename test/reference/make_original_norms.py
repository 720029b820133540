"""Makes the group-norm and batch-renorm references from the original's own network files.

Run once, by hand, under TensorFlow 1.15 with TensorLayer 1.7.4 and a checkout of
auroua/InsightFace_TF (its nets/ folder on the path, for `tl_layers_modify`):

    PYTHONPATH=<tensorlayer-1.7.4>:<InsightFace_TF>/nets:<InsightFace_TF>:. \\
        .venv-tf1/bin/python test/reference/make_original_norms.py test/reference

It builds `L_Resnet_E_IR_GBN.get_resnet` and `L_Resnet_E_IR_RBN.get_resnet` (depth 50,
type 'ir', the original's 4x-wide network) and writes, for each:
  - insightface_tf_{gbn,rbn}_r50_variables.tsv: every variable's name, shape, trainable
    (with the original's arcface_loss head, out_num 85164, as the other lists);
  - original_norms.npz: with every variable set to `deterministic_value(name, shape)`
    (below; the test sets this port's variables the same way), the embeddings of four
    fixed 64x64 inputs in inference mode (trainable=False) and in training mode
    (trainable=True, dropout off) over two steps, with the moving statistics the
    training-mode updates leave behind.
The test (test/test_norms.py) imports `deterministic_value` and `INPUT_SHAPE` from here.
"""
import os
import sys
import zlib

import numpy as np

INPUT_SHAPE = (4, 64, 64, 3)
DEPTH = 50
NUM_CLASSES = 85164
# Variables whose values after the training-mode steps are recorded (renorm: all five
# statistics; name suffixes are completed per statistic).
WATCHED_NORMS = ('resnet_v1_50/bn0', 'resnet_v1_50/block2/unit_2/bottleneck_v1/conv1_bn1',
                 'resnet_v1_50/block4/unit_3/bottleneck_v1/conv2_bn/BatchNorm',
                 'resnet_v1_50/E_BN2')
STATISTICS = ('moving_mean', 'moving_variance', 'moving_stddev', 'renorm_mean',
              'renorm_stddev')


def deterministic_value(name, shape):
    """A value for variable `name` that depends on its name and shape only.

    Scales keep a 50-layer network's activations in range: kernels as He
    initialisation halved, normalisation scales near 1, offsets and means near
    0, variances and standard deviations in [0.5, 1.5].
    """
    rng = np.random.RandomState(zlib.crc32(name.encode('utf-8')))
    shape = tuple(shape)
    leaf = name.rsplit('/', 1)[-1]
    if leaf in ('W_conv2d', 'W', 'embedding_weights'):
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) * 0.5 * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if leaf in ('gamma', 'scale'):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf in ('moving_variance', 'moving_stddev', 'renorm_stddev'):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == 'alphas':
        return rng.uniform(0.0, 0.3, shape).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def inputs():
    """Four fixed inputs in [-1, 1], as normalised images are."""
    return np.random.RandomState(0).uniform(-1.0, 1.0, INPUT_SHAPE).astype(np.float32)


def _run_original(module, trainable, steps):
    """Embeddings of the original's network; after `steps` training-mode steps, statistics."""
    import tensorflow as tf
    import tensorlayer as tl
    from losses.face_losses import arcface_loss
    tl.layers.clear_layers_name()
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, INPUT_SHAPE)
        net = module.get_resnet(images, DEPTH, type='ir',
                                w_init=tf.contrib.layers.xavier_initializer(uniform=False),
                                trainable=trainable)
        arcface_loss(net.outputs, tf.zeros([INPUT_SHAPE[0]], tf.int64), NUM_CLASSES,
                     w_init=tf.contrib.layers.xavier_initializer(uniform=False))
        variables = tf.global_variables()
        trainable_names = set(v.op.name for v in tf.trainable_variables())
        listing = [(v.op.name, v.get_shape().as_list(), v.op.name in trainable_names)
                   for v in variables]
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        feed = {images: inputs()}
        feed.update(tl.utils.dict_to_one(net.all_drop))
        with tf.Session() as sess:
            for var in variables:
                var.load(deterministic_value(var.op.name, var.get_shape().as_list()), sess)
            embeddings = []
            for _ in range(steps):
                embeddings.append(sess.run([net.outputs] + update_ops, feed)[0])
            by_name = dict((v.op.name, v) for v in variables)
            statistics = {}
            for norm in WATCHED_NORMS:
                for stat in STATISTICS:
                    name = '%s/%s' % (norm, stat)
                    if name in by_name:
                        statistics[name] = sess.run(by_name[name])
    return listing, embeddings, statistics


def _write_tsv(path, listing, what):
    with open(path, 'w') as f:
        f.write('# variable_name\tshape\ttrainable  (%s, the 4x-wide variant, depth 50 on 64x64 '
                'inputs (E_DenseLayer/W has 4*4*2048 rows), trainable=True as in its training '
                'scripts, arcface out_num %d, TF1.15 + '
                'TensorLayer 1.7.4; made by make_original_norms.py)\n' % (what, NUM_CLASSES))
        for name, shape, trainable in listing:
            f.write('%s\t%s\t%s\n' % (name, ','.join(str(d) for d in shape), trainable))


def main(out_dir):
    import tensorflow as tf
    import L_Resnet_E_IR_GBN
    import L_Resnet_E_IR_RBN
    arrays = {'inputs': inputs(),
              'how': np.array('Made by test/reference/make_original_norms.py with the original '
                              'InsightFace_TF (auroua/InsightFace_TF at 6ffe429) nets/'
                              'L_Resnet_E_IR_GBN.py and L_Resnet_E_IR_RBN.py, depth 50, under '
                              'TensorFlow %s + TensorLayer 1.7.4' % tf.__version__)}
    for key, module, what in (('gbn', L_Resnet_E_IR_GBN, 'L_Resnet_E_IR_GBN.py'),
                              ('rbn', L_Resnet_E_IR_RBN, 'L_Resnet_E_IR_RBN.py')):
        listing, training, statistics = _run_original(module, True, 2)
        _write_tsv(os.path.join(out_dir, 'insightface_tf_%s_r50_variables.tsv' % key),
                   listing, what)
        _, inference, _ = _run_original(module, False, 1)
        arrays['%s_inference' % key] = inference[0]
        arrays['%s_training_step1' % key] = training[0]
        arrays['%s_training_step2' % key] = training[1]
        for name, value in statistics.items():
            arrays['%s_after2:%s' % (key, name)] = value
    np.savez_compressed(os.path.join(out_dir, 'original_norms.npz'), **arrays)


if __name__ == '__main__':
    main(sys.argv[1])
