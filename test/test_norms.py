"""Group norm and batch renorm against the original's own L_Resnet_E_IR_GBN.py / _RBN.py.

The references (test/reference/insightface_tf_{gbn,rbn}_r50_variables.tsv and
original_norms.npz) were made by running the original's files under TF 1.15 +
TensorLayer 1.7.4 (test/reference/make_original_norms.py): every variable was set
to a value that depends only on its name and shape, and the embeddings of four
fixed inputs recorded in inference mode and over two training-mode steps, with
the statistics those steps leave. Here this port's network gets the same values.
"""
import importlib.util
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import layers
from nets.L_Resnet_E_IR import GROUP, BATCH_RENORM, NORMS, get_resnet

from test_nets import assert_variables_match, read_reference

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'reference')
_spec = importlib.util.spec_from_file_location(
    'make_original_norms', os.path.join(REFERENCE, 'make_original_norms.py'))
make_original_norms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_original_norms)
KEYS = {GROUP: 'gbn', BATCH_RENORM: 'rbn'}


@pytest.fixture(scope='module')
def original():
    with np.load(os.path.join(REFERENCE, 'original_norms.npz')) as arrays:
        return dict(arrays)


@pytest.mark.parametrize('norm', [GROUP, BATCH_RENORM])
def test_variables_match_the_original_files(norm):
    """Listed on 64x64 inputs (E_DenseLayer/W: 4 * 4 * 2048 rows)."""
    expected = read_reference(os.path.join(
        REFERENCE, 'insightface_tf_%s_r50_variables.tsv' % KEYS[norm]))
    assert_variables_match(expected, 50, 'wide', norm, image_side=64)


def _load_deterministic(sess):
    """Every variable set to deterministic_value, in one run (one run per variable
    costs a minute at this size)."""
    feed, assigns = {}, []
    for var in tf.global_variables():
        value = tf.placeholder(tf.float32, var.shape)
        assigns.append(tf.assign(var, value))
        feed[value] = make_original_norms.deterministic_value(var.op.name, var.shape.as_list())
    sess.run(assigns, feed)


def _relative(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize('norm', [GROUP, BATCH_RENORM])
def test_inference_embeddings_equal_the_original(original, norm):
    with tf.Graph().as_default():
        images = tf.constant(original['inputs'])
        embedding, _ = get_resnet(images, 50, is_training=False, variant='wide', norm=norm)
        with tf.Session() as sess:
            _load_deterministic(sess)
            value = sess.run(embedding)
    assert _relative(value, original['%s_inference' % KEYS[norm]]) < 1e-4


@pytest.mark.parametrize('norm', [GROUP, BATCH_RENORM])
def test_training_steps_equal_the_original(original, norm):
    """Two training-mode forward passes with their statistics updates (dropout off):
    the first with renorm's r and d clipped (renorm statistics at their set values),
    the second after they moved; then the statistics themselves."""
    key = KEYS[norm]
    with tf.Graph().as_default():
        images = tf.constant(original['inputs'])
        embedding, _ = get_resnet(images, 50, is_training=True, keep_prob=1.0,
                                  variant='wide', norm=norm)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        by_name = dict((v.op.name, v) for v in tf.global_variables())
        with tf.Session() as sess:
            _load_deterministic(sess)
            steps = [sess.run([embedding] + updates)[0] for _ in range(2)]
            statistics = {name: sess.run(by_name[name.split(':', 1)[1]])
                          for name in original if name.startswith(key + '_after2:')}
    assert _relative(steps[0], original[key + '_training_step1']) < 1e-4
    assert _relative(steps[1], original[key + '_training_step2']) < 1e-4
    assert len(statistics) == (20 if norm == BATCH_RENORM else 0)
    for name, value in statistics.items():
        assert _relative(value, original[name]) < 1e-4, name


def test_group_norm_groups_consecutive_channels():
    """min(32, C) groups of C/G consecutive channels, each to mean 0 and variance 1
    over the map and its channels (scale 1, offset 0), with epsilon 1e-5."""
    rng = np.random.RandomState(1)
    for channels in (16, 64):
        x = (rng.standard_normal((2, 3, 5, channels)) * rng.uniform(0.5, 4, channels)
             + rng.uniform(-3, 3, channels)).astype(np.float32)
        groups = min(32, channels)
        grouped = x.reshape(2, 3, 5, groups, channels // groups).astype(np.float64)
        mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
        var = grouped.var(axis=(1, 2, 4), keepdims=True)
        expected = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
        with tf.Graph().as_default():
            y = layers.group_norm(tf.constant(x), True, 'gn')
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                np.testing.assert_allclose(sess.run(y), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('norm,decayed', [
    (GROUP, ('W_conv2d', 'alphas', 'W')),
    (BATCH_RENORM, ('W_conv2d', 'alphas', 'W', 'gamma'))])
def test_weight_decay_falls_where_the_original_puts_it(norm, decayed):
    """The original decays variables named W_conv2d, W, gamma, alphas: group norm's
    scale and offset are not; batch renorm's gammas (E_BN2's too) are."""
    with tf.Graph().as_default():
        get_resnet(tf.placeholder(tf.float32, [None, 32, 32, 3]), 18, is_training=True,
                   norm=norm)
        names = set(v.op.name.rsplit('/', 1)[-1]
                    for v in tf.get_collection(layers.WEIGHT_DECAY))
        trainable = set(v.op.name.rsplit('/', 1)[-1] for v in tf.trainable_variables())
    assert names == set(decayed)
    assert names < trainable


@pytest.mark.parametrize('norm', [GROUP, BATCH_RENORM])
def test_standard_width_and_inference_variables(norm):
    """Any norm builds at the standard width; inference needs only what evaluation
    restores (renorm: gamma, beta and the moving mean and variance)."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 32, 32, 3])
        get_resnet(images, 18, is_training=False, norm=norm)
        names = [v.op.name for v in tf.global_variables()]
    last_map = 'resnet_v1_18/%s/' % NORMS[norm].last_map
    leaves = sorted(n[len(last_map):] for n in names if n.startswith(last_map))
    assert leaves == (['offset', 'scale'] if norm == GROUP else
                      ['beta', 'gamma', 'moving_mean', 'moving_variance'])
    assert not any('renorm' in n or 'moving_stddev' in n for n in names)
