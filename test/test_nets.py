"""L_Resnet_E_IR: names and shapes against the original's checkpoints, counts, BN modes."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from losses import face_losses
from nets import layers
from nets.L_Resnet_E_IR import UNITS_PER_BLOCK, VARIANTS, get_resnet, scope_name
TEST_DIR = os.path.dirname(os.path.abspath(__file__))
# Lists made here from the original's own code (TF 1.15 + TensorLayer 1.7.4); see their headers.
OWN_REFERENCE = os.path.join(TEST_DIR, 'reference')
ORIGINAL_NUM_CLASSES = 85164  # the reference graph's arcface out_num


def read_reference(path):
    """{name: (shape tuple, trainable bool)} from the original's variable list."""
    variables = {}
    with open(path) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            name, shape, trainable = line.rstrip('\n').split('\t')
            variables[name] = (tuple(int(d) for d in shape.split(',')), trainable == 'True')
    return variables


def graph_variables():
    trainable = set(v.op.name for v in tf.trainable_variables())
    return {v.op.name: (tuple(v.get_shape().as_list()), v.op.name in trainable)
            for v in tf.global_variables()}


@pytest.mark.parametrize('depth,variant', [(50, 'standard'), (100, 'standard'), (50, 'wide')])
def test_variables_match_original_checkpoint(request, depth, variant):
    if variant == 'wide':  # made here with the original's code, see its header
        path = os.path.join(OWN_REFERENCE, 'insightface_tf_wide_r50_variables.tsv')
    else:
        path = os.path.join(request.getfixturevalue('shared_reference'),
                            'insightface_tf_r%d_variables.tsv' % depth)
    assert_variables_match(read_reference(path), depth, variant)


def assert_variables_match(expected, depth, variant, norm='batch', image_side=112):
    """The training graph with the original's arcface head holds exactly `expected`
    (read_reference), same shapes, same trainable flags."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, image_side, image_side, 3])
        labels = tf.placeholder(tf.int64, [None])
        embedding, _ = get_resnet(images, depth, is_training=True, variant=variant, norm=norm)
        face_losses.margin_logits('arcface', embedding, labels, ORIGINAL_NUM_CLASSES)
        actual = graph_variables()
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, 'missing %s, extra %s' % (missing[:5], extra[:5])
    for name, (shape, trainable) in expected.items():
        assert actual[name] == (shape, trainable), name


@pytest.mark.parametrize('depth,count', [(50, 43586112), (100, 65151424)])
def test_trainable_backbone_parameters(depth, count):
    with tf.Graph().as_default():
        get_resnet(tf.placeholder(tf.float32, [None, 112, 112, 3]), depth, is_training=True)
        total = sum(v.get_shape().num_elements() for v in tf.trainable_variables())
    assert total == count


def test_unit_counts_per_depth():
    for depth, units in UNITS_PER_BLOCK.items():
        with tf.Graph().as_default():
            get_resnet(tf.placeholder(tf.float32, [None, 112, 112, 3]), depth, is_training=False)
            names = [v.op.name for v in tf.global_variables()]
        for block, num_units in enumerate(units):
            prefix = '%s/block%d/unit_%d/' % (scope_name(depth), block + 1, num_units)
            beyond = '%s/block%d/unit_%d/' % (scope_name(depth), block + 1, num_units + 1)
            assert any(n.startswith(prefix) for n in names), prefix
            assert not any(n.startswith(beyond) for n in names), beyond


def test_unknown_depth_is_refused():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r'unsupported net_depth 101; expected one of '
                                             r'\[18, 34, 50, 100, 152\]$'):
            get_resnet(tf.placeholder(tf.float32, [1, 112, 112, 3]), 101, is_training=True)
        with pytest.raises(ValueError, match=r'unsupported net_depth 100; expected one of '
                                             r'\[50, 101, 152\] \(wide variant\)$'):
            get_resnet(tf.placeholder(tf.float32, [1, 112, 112, 3]), 100, is_training=True,
                       variant='wide')


def test_wide_variant_units_and_widths():
    """The original's L_Resnet_E_IR.py: first conv of a unit at the block's width, the
    second and the shortcut 4x wider; 101 has the units of the standard 100."""
    assert VARIANTS['wide'].units_per_block[101] == UNITS_PER_BLOCK[100]
    with tf.Graph().as_default():
        embedding, end_points = get_resnet(tf.placeholder(tf.float32, [2, 112, 112, 3]), 101,
                                           is_training=False, variant='wide')
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    unit = 'resnet_v1_101/block3/unit_30/bottleneck_v1/'
    assert shapes[unit + 'conv1/W_conv2d'] == [3, 3, 1024, 256]
    assert shapes[unit + 'conv2/W_conv2d'] == [3, 3, 256, 1024]
    assert shapes['resnet_v1_101/block1/unit_1/bottleneck_v1/shortcut_conv/W_conv2d'] == \
        [1, 1, 64, 256]
    assert end_points['block4'].shape.as_list() == [2, 7, 7, 2048]
    assert embedding.shape.as_list() == [2, 512]


def test_output_shapes_and_embedding():
    with tf.Graph().as_default():
        images = tf.random_uniform([2, 112, 112, 3], -1, 1, seed=1)
        embedding, end_points = get_resnet(images, 18, is_training=True)
        shapes = {k: v.get_shape().as_list() for k, v in end_points.items()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            value = sess.run(embedding)
    assert shapes['stem'] == [2, 112, 112, 64]
    assert shapes['block1'] == [2, 56, 56, 64]
    assert shapes['block2'] == [2, 28, 28, 128]
    assert shapes['block3'] == [2, 14, 14, 256]
    assert shapes['block4'] == [2, 7, 7, 512]
    assert value.shape == (2, 512) and np.all(np.isfinite(value))


def test_inference_graph_shares_variables_and_uses_moving_statistics():
    rng = np.random.RandomState(0)
    batch = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 32, 32, 3])
        train_emb, _ = get_resnet(images, 18, is_training=True, keep_prob=1.0)
        count = len(tf.global_variables())
        infer_emb, _ = get_resnet(images, 18, is_training=False, reuse=True)
        assert len(tf.global_variables()) == count
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # Training mode: each image's embedding depends on the rest of the batch.
            alone = sess.run(train_emb, {images: batch[:2]})
            together = sess.run(train_emb, {images: batch})[:2]
            assert np.abs(alone - together).max() > 1e-3
            # Inference mode: it does not, and it changes once moving averages move.
            infer_alone = sess.run(infer_emb, {images: batch[:2]})
            infer_together = sess.run(infer_emb, {images: batch})[:2]
            np.testing.assert_allclose(infer_alone, infer_together, rtol=1e-4, atol=1e-4)
            sess.run(updates, {images: batch})
            assert np.abs(sess.run(infer_emb, {images: batch[:2]}) - infer_alone).max() > 1e-4


@pytest.mark.parametrize('shape', [(6, 5, 4, 3), (6, 3)])
def test_batch_norm_against_numpy(shape):
    rng = np.random.RandomState(1)
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    eps, decay = layers.DEFAULTS.bn_epsilon, layers.DEFAULTS.bn_decay
    with tf.Graph().as_default():
        inputs = tf.constant(x)
        train_out = layers.batch_norm(inputs, True, 'bn')
        with tf.variable_scope('', reuse=True):
            infer_out = layers.batch_norm(inputs, False, 'bn')
        update = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        variables = {v.op.name.split('/')[-1]: v for v in tf.global_variables()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            gamma, beta = sess.run([variables['gamma'], variables['beta']])
            got_train = sess.run(train_out)
            sess.run(update)
            moving_mean, moving_var = sess.run([variables['moving_mean'],
                                                variables['moving_variance']])
            got_infer = sess.run(infer_out)
    axes = tuple(range(len(shape) - 1))
    mean, var = x.mean(axes), x.var(axes)
    np.testing.assert_allclose(got_train, (x - mean) / np.sqrt(var + eps) * gamma + beta,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(moving_mean, (1 - decay) * mean, rtol=1e-5)
    n = np.prod([shape[a] for a in axes])
    # The fused 4-D kernel hands the unbiased variance to the moving average.
    batch_var = var * n / (n - 1) if len(shape) == 4 else var
    np.testing.assert_allclose(moving_var, decay + (1 - decay) * batch_var, rtol=1e-5)
    np.testing.assert_allclose(
        got_infer, (x - moving_mean) / np.sqrt(moving_var + eps) * gamma + beta,
        rtol=1e-4, atol=1e-4)


def test_stride_two_conv_pads_one_pixel_then_valid():
    rng = np.random.RandomState(2)
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    with tf.Graph().as_default():
        out = layers.conv2d(tf.constant(x), 3, 3, 2, 'c')
        kernel = tf.global_variables()[0]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got, w = sess.run([out, kernel])
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], 'constant')
    expected = np.zeros((1, 3, 3, 3), np.float32)
    for i in range(3):
        for j in range(3):
            patch = padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            expected[0, i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_prelu_and_xavier_initialiser():
    with tf.Graph().as_default():
        x = tf.constant([[-2.0, 3.0], [4.0, -1.0]])
        out = layers.prelu(x, 'p')
        alphas = tf.global_variables()[0]
        w = tf.get_variable('w', [400, 600], initializer=layers.xavier_normal(400, 600))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            assert sess.run(out).tolist() == [[0.0, 3.0], [4.0, 0.0]]
            sess.run(alphas.assign([0.5, 0.25]))
            assert sess.run(out).tolist() == [[-1.0, 3.0], [4.0, -0.25]]
            weights = sess.run(w)
    stddev = np.sqrt(1.3 * 2 / 1000.0)
    assert np.abs(weights).max() <= 2 * stddev + 1e-6  # truncated at two stddev
    # A normal truncated at 2 sigma keeps 0.8796 of sigma.
    assert abs(weights.std() / (0.8796 * stddev) - 1) < 0.02
