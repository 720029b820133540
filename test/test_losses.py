"""Margin heads against NumPy references of their formulas, edge cases and gradients, and
the original's loss functions against the original's own results."""
import math
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from losses import face_losses

from conftest import PROJECT_ROOT  # noqa: E402


def np_arcface(cos, labels, s=64.0, m=0.5):
    out = s * cos.astype(np.float64)
    for i, y in enumerate(labels):
        c = float(cos[i, y])
        if c > math.cos(math.pi - m):
            out[i, y] = s * math.cos(math.acos(min(1.0, max(-1.0, c))) + m)
        else:
            out[i, y] = s * (c - math.sin(m) * m)
    return out


def np_cosface(cos, labels, s=30.0, m=0.4):
    out = s * cos.astype(np.float64)
    out[np.arange(len(labels)), labels] -= s * m
    return out


def np_combined(cos, labels, s=64.0, m1=1.0, m2=0.3, m3=0.2):
    out = s * cos.astype(np.float64)
    for i, y in enumerate(labels):
        theta = math.acos(min(1.0, max(-1.0, float(cos[i, y]))))
        out[i, y] = s * (math.cos(m1 * theta + m2) - m3)
    return out


def run_logits(fn, cos, labels, **kwargs):
    with tf.Graph().as_default():
        cos_t = tf.constant(cos, tf.float32)
        logits = fn(cos_t, tf.constant(labels), **kwargs)
        grad = tf.gradients(tf.reduce_sum(logits * np.linspace(0.5, 1.5, cos.size).reshape(
            cos.shape).astype(np.float32)), cos_t)[0]
        with tf.Session() as sess:
            return sess.run([logits, grad])


# Cosines covering the ordinary range, the theta + m > pi branch and both extremes.
EDGE_COS = np.array([[1.0, 0.3, -0.2],
                     [-1.0, 0.5, 0.1],
                     [0.2, -0.95, 0.0],
                     [0.6, 0.1, 1.0],
                     [-0.9, 0.0, -1.0]], np.float32)
EDGE_LABELS = np.array([0, 0, 1, 2, 2])


@pytest.mark.parametrize('fn,reference,kwargs', [
    (face_losses.arcface_logits, np_arcface, {}),
    (face_losses.arcface_logits, np_arcface, {'s': 32.0, 'm': 0.3}),
    (face_losses.cosface_logits, np_cosface, {}),
    (face_losses.combined_margin_logits, np_combined, {}),
    (face_losses.combined_margin_logits, np_combined, {'m1': 1.2, 'm2': 0.1, 'm3': 0.05}),
])
def test_logits_match_formula_on_random_and_edge_cases(fn, reference, kwargs):
    rng = np.random.RandomState(3)
    random_cos = rng.uniform(-1, 1, (16, 10)).astype(np.float32)
    random_labels = rng.randint(0, 10, 16)
    for cos, labels in [(random_cos, random_labels), (EDGE_COS, EDGE_LABELS)]:
        logits, grad = run_logits(fn, cos, labels, **kwargs)
        np.testing.assert_allclose(logits, reference(cos, labels, **kwargs), rtol=1e-5, atol=1e-4)
        assert np.all(np.isfinite(grad)), grad


def test_arcface_fallback_branch_is_taken_past_pi_minus_m():
    m = 0.5
    below = math.cos(math.pi - m) - 0.01  # theta + m > pi: fallback
    cos = np.array([[below, 0.0]], np.float32)
    logits, _ = run_logits(face_losses.arcface_logits, cos, np.array([0]))
    assert logits[0, 0] == pytest.approx(64 * (below - math.sin(m) * m), rel=1e-5)
    assert logits[0, 0] != pytest.approx(64 * math.cos(math.acos(below) + m), rel=1e-3)


def original_head(loss_type):
    """The heads as fn(embedding, labels, out_num, w_init=None) -> logits with each one's
    default margins (combine: insightface's), in the original's variable scopes: its
    arcface_loss and cosineface_losses (kept in losses.face_losses with its names and
    signatures); for combine, whose original returns the logits without the margin, the
    port's combined head in combine_loss_val's scope."""
    if loss_type == 'combine':
        def combined(embedding, labels, out_num, w_init=None):
            cos_t = face_losses.class_cosines(embedding, out_num, w_init,
                                              face_losses.COMBINE_SCOPE)
            return face_losses.combined_margin_logits(cos_t, labels)
        return combined
    return {'arcface': face_losses.arcface_loss,
            'cosineface': face_losses.cosineface_losses}[loss_type]


# Outputs of the original InsightFace_TF's own losses/face_losses.py on fixed inputs (the
# file's 'how' says how it was made).
ORIGINAL_LOSSES = os.path.join(PROJECT_ROOT, 'test', 'reference', 'original_face_losses.npz')


def test_the_originals_loss_functions_give_the_originals_results():
    reference = np.load(ORIGINAL_LOSSES)
    with tf.Graph().as_default():
        embedding = tf.constant(reference['embedding'])
        labels = tf.constant(reference['labels'])
        init = tf.constant_initializer(reference['class_centres'])
        arcface = face_losses.arcface_loss(embedding, labels, 10, w_init=init)
        cosface = face_losses.cosineface_losses(embedding, labels, 10, w_init=init)
        combined = face_losses.combine_loss_val(embedding, labels, init, 10, 1.0, 0.3, 0.2, 64.0)
        names = [v.op.name for v in tf.global_variables()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got = sess.run({'arcface_loss': arcface, 'cosineface_losses': cosface,
                            'combine': combined})
    assert names == list(reference['variable_names'])
    for name in ('arcface_loss', 'cosineface_losses'):
        np.testing.assert_allclose(got[name], reference[name], rtol=1e-5, atol=1e-4,
                                   err_msg=name)
    zy, loss, accuracy, accuracy_s, predicted = got['combine']
    np.testing.assert_allclose(zy, reference['combine_zy'], rtol=1e-5, atol=1e-4)
    assert loss == pytest.approx(float(reference['combine_loss']), rel=1e-5)
    assert accuracy == reference['combine_accuracy']
    assert accuracy_s == reference['combine_accuracy_s']
    np.testing.assert_array_equal(predicted, reference['combine_predict_cls_s'])


def build_head(embedding_value, labels_value, dtype, head, **kwargs):
    embedding = tf.constant(embedding_value, dtype)
    logits = head(embedding, tf.constant(labels_value), 7, **kwargs)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.constant(labels_value), logits=logits))
    grads = tf.gradients(loss, [embedding] + tf.trainable_variables())
    return logits, loss, grads


@pytest.mark.parametrize('head', ['arcface', 'cosineface', 'combine'])
@pytest.mark.parametrize('batch', [1, 3])
def test_heads_end_to_end_against_numpy(head, batch):
    rng = np.random.RandomState(batch)
    emb = rng.normal(size=(batch, 8)).astype(np.float32)
    labels = rng.randint(0, 7, batch)
    reference = {'arcface': np_arcface, 'cosineface': np_cosface,
                 'combine': np_combined}[head]
    with tf.Graph().as_default():
        logits, loss, grads = build_head(emb, labels, tf.float32, original_head(head))
        weights = tf.trainable_variables()[0]
        # The original's names: arcface_loss/, cosineface_loss/, and the top level for combine.
        assert weights.op.name == {'arcface': 'arcface_loss/embedding_weights',
                                   'cosineface': 'cosineface_loss/embedding_weights',
                                   'combine': 'embedding_weights'}[head]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got, w, grad_values = sess.run([logits, weights, grads])
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).dot(
        w / np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(got, reference(cos, labels), rtol=1e-4, atol=1e-3)
    assert all(np.all(np.isfinite(g)) for g in grad_values)


def test_arcface_weight_name_matches_original():
    with tf.Graph().as_default():
        original_head('arcface')(tf.zeros([2, 512]), tf.constant([0, 1]), 10)
        assert [v.op.name for v in tf.global_variables()] == ['arcface_loss/embedding_weights']


def test_float16_embedding_computed_in_float32_and_finite_at_cos_one():
    # The embedding is exactly the first class centre: cos theta == 1 after normalising.
    with tf.Graph().as_default():
        centre = np.zeros((4, 3), np.float32)
        centre[0, 0] = 1.0
        centre[1, 1] = 1.0
        centre[2, 2] = 1.0
        embedding = tf.constant([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, -3.0, 0.0]], tf.float16)
        labels = tf.constant([0, 2])
        logits = original_head('arcface')(embedding, labels, 3,
                                          w_init=tf.constant_initializer(centre))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))
        grads = tf.gradients(loss, [embedding] + tf.trainable_variables())
        assert logits.dtype == tf.float32
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got, loss_value, grad_values = sess.run([logits, loss, grads])
    assert got[0, 0] == pytest.approx(64 * math.cos(0.5), rel=1e-5)
    assert got[1, 2] == pytest.approx(64 * (-1 - math.sin(0.5) * 0.5), rel=1e-5)
    assert np.isfinite(loss_value)
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grad_values)


def test_margin_logits_returns_plain_cosines_and_refuses_unknown_type():
    with tf.Graph().as_default():
        embedding = tf.constant(np.eye(3, 4, dtype=np.float32))
        logits, cos_t = face_losses.margin_logits('cosineface', embedding, tf.constant([0, 1, 2]),
                                                  5, s=30.0, m=0.4)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got_logits, got_cos = sess.run([logits, cos_t])
        with pytest.raises(ValueError, match="unknown loss_type 'softmax'"):
            face_losses.margin_logits('softmax', embedding, tf.constant([0, 1, 2]), 5)
    np.testing.assert_allclose(got_logits, np_cosface(got_cos, [0, 1, 2]), rtol=1e-5, atol=1e-4)
    assert np.all(np.abs(got_cos) <= 1.0 + 1e-6)
