"""Margin-based softmax heads for face recognition: ArcFace, CosFace, combined.

All three start from the cosine between the L2-normalised embedding and the
L2-normalised class centres (`<scope>/embedding_weights`, [embedding_size,
num_classes]) and change only the target-class logit:

  ArcFace  (Deng et al., CVPR 2019):  s * cos(theta + m), and where
           theta + m would pass pi (cos theta <= cos(pi - m)) the original's
           fallback s * (cos theta - m * sin m)
  CosFace  (Wang et al., CVPR 2018):  s * (cos theta - m)
  combined (insightface):             s * (cos(m1 * theta + m2) - m3)

The functions return logits; cross-entropy is the caller's. Everything is
computed in float32, also when the embedding arrives in float16 (mixed
precision), and stays finite in value and gradient when cos theta is exactly
+-1, where sqrt(1 - cos^2) and acos have infinite derivatives.

Typical use (the original's arcface_loss, cosineface_loss and combine_loss_val are
margin_logits('arcface' | 'cosineface' | 'combine', ...)):
    logits, cosines = margin_logits('arcface', embedding, labels, num_classes)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))
"""
import contextlib
import math

import tensorflow.compat.v1 as tf

from nets import layers

ARCFACE_SCOPE = 'arcface_loss'
# The original's combine_loss_val creates `embedding_weights` in the caller's scope
# (top level); this port's first releases put it under 'combine_loss/'. Both load
# (checkpoint_utils.NAME_ALIASES).
COMBINE_SCOPE = ''


@contextlib.contextmanager
def tensors_as_given(*tensors):
    """The float32_scope of a device that computes everything in float32: no change."""
    yield tensors


def class_cosines(embedding, out_num, w_init=None, scope=ARCFACE_SCOPE, reuse=None,
                  float32_scope=tensors_as_given):
    """Cosine of every embedding with every class centre.

    Args:
      embedding: float [N, D] (float16 is cast to float32).
      out_num: number of classes C.
      w_init: initialiser of the class centres; Xavier normal by default.
      scope: variable scope of `embedding_weights`; '' for the caller's scope.
      reuse: passed to the variable scope.
      float32_scope: fn(*tensors) -> a context, entered as the tensors to compute
        from, whose ops a mixed-precision device must keep in float32
        (devices.runtime.float32_scope); here the L2 normalisations.
    Returns:
      float32 [N, C] in [-1, 1].
    """
    embedding = tf.cast(embedding, tf.float32)
    embedding_size = embedding.get_shape().as_list()[-1]
    with tf.variable_scope(scope or tf.get_variable_scope(), reuse=reuse):
        if w_init is None:
            w_init = layers.xavier_normal(embedding_size, out_num)
        weights = tf.get_variable('embedding_weights', [embedding_size, out_num], tf.float32,
                                  initializer=w_init)
        if not tf.get_variable_scope().reuse:
            tf.add_to_collection(layers.WEIGHT_DECAY, weights)
    return cosines(embedding, weights, float32_scope)


def cosines(embedding, centres, float32_scope=tensors_as_given):
    """float32 [N, k]: the cosine of each embedding [N, D] with each centre (a column of
    [D, k]); the L2 normalisations inside float32_scope (see class_cosines)."""
    embedding = tf.cast(embedding, tf.float32)
    with float32_scope(embedding, centres) as (embedding, centres):
        embedding = tf.nn.l2_normalize(embedding, axis=1)
        centres = tf.nn.l2_normalize(centres, axis=0)
    return tf.matmul(embedding, centres, name='cos_t')


def _safe_sin_from_cos(cos_t):
    """sqrt(1 - cos^2) with a zero (not infinite) gradient where |cos| >= 1."""
    sin2 = 1.0 - tf.square(cos_t)
    inside = sin2 > 0.0
    safe = tf.where(inside, sin2, tf.ones_like(sin2))
    return tf.where(inside, tf.sqrt(safe), tf.zeros_like(sin2))


def _safe_acos(cos_t):
    """acos with a zero (not infinite) gradient at cos = +-1; exact values there."""
    inside = tf.abs(cos_t) < 1.0
    safe = tf.where(inside, cos_t, tf.zeros_like(cos_t))
    edge = tf.where(cos_t >= 1.0, tf.zeros_like(cos_t), tf.fill(tf.shape(cos_t), math.pi))
    return tf.where(inside, tf.acos(safe), edge)


def _replace_target_logit(cos_t, labels, target_logit, s):
    """s * cos for every class but the label, whose logit is `target_logit`."""
    mask = tf.one_hot(labels, tf.shape(cos_t)[1], dtype=tf.float32)
    return s * cos_t * (1.0 - mask) + target_logit * mask


def arcface_logits(cos_t, labels, s=64.0, m=0.5):
    """ArcFace logits from cosines (see module docstring).

    Args:
      cos_t: float32 [N, C] cosines.
      labels: int [N] class ids.
      s: scale.
      m: additive angular margin in radians.
    Returns:
      float32 [N, C] logits.
    """
    cos_m, sin_m = math.cos(m), math.sin(m)
    threshold = math.cos(math.pi - m)
    sin_t = _safe_sin_from_cos(cos_t)
    cos_mt = s * (cos_t * cos_m - sin_t * sin_m)
    keep_val = s * (cos_t - sin_m * m)
    target = tf.where(cos_t > threshold, cos_mt, keep_val)
    return _replace_target_logit(cos_t, labels, target, s)


def cosface_logits(cos_t, labels, s=30.0, m=0.4):
    """CosFace (large-margin cosine) logits: s * (cos - m) at the label."""
    return _replace_target_logit(cos_t, labels, s * (cos_t - m), s)


def combined_margin_logits(cos_t, labels, s=64.0, m1=1.0, m2=0.3, m3=0.2):
    """insightface's combined margin: s * (cos(m1 * theta + m2) - m3) at the label.

    (1, 0, 0) is plain softmax on cosines, (1, m, 0) ArcFace without the
    theta + m > pi fallback, (1, 0, m) CosFace. Unlike the original's
    `combine_loss_val`, nothing depends on the batch size.
    """
    theta = _safe_acos(cos_t)
    target = s * (tf.cos(m1 * theta + m2) - m3)
    return _replace_target_logit(cos_t, labels, target, s)


def arcface_loss(embedding, labels, out_num, w_init=None, s=64., m=0.5):
    """The original's `arcface_loss` (its name, signature and variable scope): ArcFace
    logits with the class centres in 'arcface_loss/embedding_weights'."""
    return arcface_logits(class_cosines(embedding, out_num, w_init, ARCFACE_SCOPE), labels, s, m)


def cosineface_losses(embedding, labels, out_num, w_init=None, s=30., m=0.4):
    """The original's `cosineface_losses`: CosFace logits, centres in 'cosineface_loss/'."""
    return cosface_logits(class_cosines(embedding, out_num, w_init, HEADS['cosineface'][0]),
                          labels, s, m)


def combine_loss_val(embedding, labels, w_init, out_num, margin_a, margin_m, margin_b, s):
    """The original's `combine_loss_val` (its argument order, centres at the top level, its
    five results): the margin s * (cos(margin_a * theta + margin_m) - margin_b) at the
    label, in the loss and its accuracy; any batch size.

    Returns:
      (s * cosines without the margin [N, C], mean cross-entropy of the margin logits,
       accuracy of the margin logits, accuracy of the plain logits, int64 [N] argmax of
       the plain logits), as the original returns them.
    """
    cos_t = class_cosines(embedding, out_num, w_init, COMBINE_SCOPE)
    logits = combined_margin_logits(cos_t, labels, s, margin_a, margin_m, margin_b)
    plain = s * cos_t
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    labels = tf.cast(labels, tf.int64)

    def accuracy(predicted):
        return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))

    predicted_plain = tf.argmax(plain, 1)
    return plain, loss, accuracy(tf.argmax(logits, 1)), accuracy(predicted_plain), predicted_plain


# Angles at which a combined margin must penalise the target class: 0 to 90
# degrees in steps of half a degree. Class centres start near 90 degrees from
# an embedding (random directions in 512 dimensions are nearly orthogonal) and
# training pulls the target's closer, so its angle stays below 90 degrees for
# all but a few samples. Above that even ArcFace's cos(theta + m) rises again
# once theta + m passes pi (arcface_logits falls back there; this head, as the
# original's and insightface's, does not), so larger angles cannot be required.
_MARGIN_CHECK_ANGLES = [math.pi / 2.0 * i / 180.0 for i in range(181)]


def combined_margin_problem(m1, m2, m3):
    """Why margins m1, m2, m3 do not penalise the target class, or None.

    The combined head replaces the target logit s * cos(theta) by
    s * (cos(m1 * theta + m2) - m3); a margin must make it no larger, for
    every angle the target class takes in training (0 to 90 degrees, see
    _MARGIN_CHECK_ANGLES). Defaults and insightface's settings pass: (1, 0.3,
    0.2), ArcFace (1, 0.5, 0), CosFace (1, 0, 0.35), (0.9, 0.4, 0.15), and
    (1, 0, 0), no margin. The original's combine_loss_val checked nothing
    and skipped a negative m2 or m3 in some branches but applied them in
    others.

    Returns:
      None, or the end of a sentence starting with the margins, e.g.
      'make the target logit ... larger than the plain cos(theta) (by 0.707 at
      theta = 90 degrees); expected ...'.
    """
    excesses = [math.cos(m1 * theta + m2) - m3 - math.cos(theta)
                for theta in _MARGIN_CHECK_ANGLES]
    excess = max(excesses)
    if excess <= 1e-9:  # (1, 0, 0) is the plain logit, up to rounding
        return None
    # The smallest angle where it is largest (a constant excess is reported at 0).
    worst = next(theta for theta, value in zip(_MARGIN_CHECK_ANGLES, excesses)
                 if value >= excess - 1e-9)
    return ('make the target logit cos(m1*theta+m2)-m3 larger than the plain cos(theta) '
            '(by %.3g at theta = %.0f degrees); expected margins that lower it for theta in '
            '[0, 90] degrees, e.g. 1,0.3,0.2 or ArcFace\'s 1,0.5,0'
            % (excess, math.degrees(worst)))


# loss_type -> (variable scope of the class centres, logits function)
HEADS = {
    'arcface': (ARCFACE_SCOPE, arcface_logits),
    'cosineface': ('cosineface_loss', cosface_logits),
    'combine': (COMBINE_SCOPE, combined_margin_logits),
}
LOSS_TYPES = tuple(HEADS)


def centres_name(loss_type):
    """The variable name of a head's class centres, e.g. 'arcface_loss/embedding_weights'."""
    scope = HEADS[loss_type][0]
    return scope + '/embedding_weights' if scope else 'embedding_weights'


def margin_logits(loss_type, embedding, labels, out_num, float32_scope=tensors_as_given,
                  w_init=None, **margin_args):
    """Logits of the named head and the plain scaled cosines.

    The plain cosines give the training accuracy a user can read: the
    original measured accuracy on the margin-penalised logits, which sits
    near zero for most of training.

    Args:
      loss_type: one of LOSS_TYPES.
      embedding: float [N, D].
      labels: int [N].
      out_num: number of classes.
      float32_scope: see class_cosines; also holds the margin's ops.
      w_init: see class_cosines.
      **margin_args: s, m (arcface, cosineface) or s, m1, m2, m3 (combine).
    Returns:
      (margin logits float32 [N, C], cosines float32 [N, C]).
    Raises:
      ValueError: unknown loss_type.
    """
    if loss_type not in HEADS:
        raise ValueError('unknown loss_type %r; expected one of %s' % (loss_type, LOSS_TYPES))
    scope, logits_fn = HEADS[loss_type]
    cos_t = class_cosines(embedding, out_num, w_init, scope=scope, float32_scope=float32_scope)
    # The margin: acos/cos near +-1 lose everything in float16 or bfloat16.
    with float32_scope(cos_t) as (margin_cos_t,):
        return logits_fn(margin_cos_t, labels, **margin_args), cos_t
