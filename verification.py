"""Face verification protocol of insightface (LFW, CFP-FP, AgeDB-30 `.bin` sets).

The metrics are those of insightface's `eval/verification.py`, itself taken
from facenet (MIT licence, David Sandberg): pairs are rows 2k and 2k+1 of the
embedding matrix, the distance is the squared L2 distance, accuracy is
10-fold cross-validated (threshold chosen on the train folds, scored on the
test fold) and VAL is read at FAR = 1e-3. The results equal the reference's
bit for bit (`test/test_verification.py`); the threshold sweeps are
vectorised (distances sorted once per fold, `np.searchsorted` counts those
below every threshold). Where the reference crashes, a documented meaning is
given instead: repeated FAR values in the VAL interpolation
(`threshold_at_far`), folds without same or different pairs
(`calculate_val_far`).

The session runner feeds fixed-size batches (NPU graphs need static shapes)
of raw uint8 BGR images, plus their horizontal mirrors, and scores the sum of
both embeddings ("Accuracy-Flip"). An image repeated in a set is embedded once.

Typical use:
    emb, emb_flip = embed_images(sess, images_ph, embedding, images, 32,
                                 extra_feed={is_training: False})
    result = evaluate_flip(emb, emb_flip, issame)
"""
import collections

import numpy as np

from data.eval_data_reader import NROF_FOLDS, distinct_images

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)  # squared-L2 grid for accuracy/ROC
VAL_THRESHOLDS = np.arange(0, 4, 0.001)  # finer grid for VAL@FAR
ACCURACY_THRESHOLDS.setflags(write=False)
VAL_THRESHOLDS.setflags(write=False)
FAR_TARGET = 1e-3

# Fields of the object returned by `evaluate_flip`.
VerificationResult = collections.namedtuple('VerificationResult', [
    'accuracy',         # float, mean test-fold accuracy (the "Accuracy-Flip")
    'accuracy_std',     # float, np.std of the per-fold accuracies
    'val',              # float, mean VAL at FAR_TARGET over folds
    'val_std',          # float, np.std of the per-fold VAL
    'far',              # float, mean FAR actually reached on the test folds
    'threshold',        # float, best accuracy threshold on ALL pairs
    'fold_thresholds',  # float64 [nrof_folds], threshold picked on each train split
    'xnorm',            # float, mean L2 norm of the raw embeddings (both passes)
    'nrof_pairs',       # int
    'tpr',              # float64 [len(ACCURACY_THRESHOLDS)], mean test-fold TPR
    'fpr',              # float64 [len(ACCURACY_THRESHOLDS)], mean test-fold FPR
])


def fold_indices(nrof_pairs, nrof_folds):
    """Unshuffled K-fold split of `np.arange(nrof_pairs)` (insightface's LFold).

    Same as sklearn's `KFold(nrof_folds, shuffle=False)`: consecutive test
    folds, the first `nrof_pairs % nrof_folds` of them one element longer. With
    one fold, train and test are both the whole set.

    Returns:
      list of `nrof_folds` (train, test) pairs of int64 index arrays.
    Raises:
      ValueError: if nrof_folds is not in [1, nrof_pairs].
    """
    if not isinstance(nrof_folds, (int, np.integer)) or not 1 <= nrof_folds <= nrof_pairs:
        raise ValueError('nrof_folds=%r: expected an int with 1 <= nrof_folds <= nrof_pairs '
                         '(%d)' % (nrof_folds, nrof_pairs))
    indices = np.arange(nrof_pairs)
    if nrof_folds == 1:
        return [(indices, indices)]
    sizes = np.full(nrof_folds, nrof_pairs // nrof_folds)
    sizes[:nrof_pairs % nrof_folds] += 1
    stops = np.cumsum(sizes)
    return [(np.concatenate([indices[:stop - size], indices[stop:]]), indices[stop - size:stop])
            for size, stop in zip(sizes, stops)]


def distance(embeddings1, embeddings2):
    """Squared L2 distance per row, [N, D] x [N, D] -> [N], in the input dtype.

    Computed as the reference does, `np.sum(np.square(e1 - e2), 1)`, so that
    float32 embeddings give the same float32 distances.
    """
    return np.sum(np.square(np.subtract(embeddings1, embeddings2)), 1)


def _counts_below(thresholds, dist, actual_issame):
    """Numbers of same / different pairs with `dist < threshold`, per threshold.

    Float64 comparison throughout, as numpy >= 2 does in the reference (numpy
    1.x rounded the thresholds to float32 against float32 distances). NaN
    distances count as "not below", like `np.less`.

    Returns:
      (n_same_below, n_diff_below, n_same, n_diff); the first two are int
      arrays shaped like `thresholds` (scalars for a scalar threshold).
    """
    dist = np.asarray(dist, np.float64)
    if dist.ndim != 1 or dist.shape != actual_issame.shape:
        raise ValueError('dist %s and actual_issame %s: expected two 1-D arrays of equal '
                         'length' % (dist.shape, actual_issame.shape))
    same = np.sort(dist[actual_issame])
    diff = np.sort(dist[~actual_issame])
    return (np.searchsorted(same, thresholds, side='left'),
            np.searchsorted(diff, thresholds, side='left'), same.size, diff.size)


def _ratio(count, total):
    """count / total as float64 (0 where total is 0), as `float(c) / float(t)`."""
    if total == 0:
        return np.zeros(np.shape(count))[()]  # a scalar for a scalar count
    return np.true_divide(count, total)


def calculate_accuracy(threshold, dist, actual_issame):
    """TPR, FPR and accuracy of the prediction `dist < threshold`.

    Args:
      threshold: float, or float64 [T] array to sweep many thresholds at once.
      dist: [N] distances.
      actual_issame: bool [N].
    Returns:
      (tpr, fpr, acc), each float64 shaped like `threshold`. TPR (FPR) is 0
      when there are no same (different) pairs, as in the reference.
    """
    actual_issame = np.asarray(actual_issame, bool)
    tp, fp, n_same, n_diff = _counts_below(threshold, dist, actual_issame)
    tn = n_diff - fp
    return _ratio(tp, n_same), _ratio(fp, n_diff), _ratio(tp + tn, n_same + n_diff)


def calculate_val_far(threshold, dist, actual_issame):
    """VAL (true accept rate) and FAR (false accept rate) of `dist < threshold`.

    Args:
      threshold: float, or float64 [T] array.
      dist: [N] distances.
      actual_issame: bool [N].
    Returns:
      (val, far), float64 shaped like `threshold`. Where the reference divides
      by zero (no same pairs for VAL, no different pairs for FAR), the value
      is 0, so a fold without different pairs never reaches the FAR target.
    """
    actual_issame = np.asarray(actual_issame, bool)
    true_accept, false_accept, n_same, n_diff = _counts_below(threshold, dist, actual_issame)
    return _ratio(true_accept, n_same), _ratio(false_accept, n_diff)


def threshold_at_far(far, thresholds, far_target):
    """Threshold at which the non-decreasing FAR curve reaches `far_target`.

    The reference's `scipy.interpolate.interp1d(far, thresholds,
    kind='slinear')(far_target)` raises whenever a FAR value repeats, which on
    real sets it nearly always does (FAR is a step function of the threshold).
    Here the curve is read as a monotone step function: interpolate between
    the LAST threshold of the plateau below `far_target` and the FIRST of the
    plateau above it (np.interp's bracket), so a target equal to a plateau's
    FAR gives that plateau's largest threshold, the highest VAL at that FAR.
    The arithmetic is interp1d's, t0 * (w * (f1 - x)) + t1 * (w * (x - f0))
    with w = 1 / (f1 - f0), so that without repeated FAR values the result
    equals the reference's bit for bit (np.interp's formula does not).

    Args:
      far: float64 [T], non-decreasing FAR at each threshold.
      thresholds: float64 [T], increasing.
      far_target: float.
    Returns:
      float; 0.0 when `far_target` is above every FAR (as the reference), the
      first threshold when it is below every FAR.
    Raises:
      ValueError: if the arrays are not 1-D of equal length or far decreases.
    """
    far = np.asarray(far, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    if far.ndim != 1 or far.shape != thresholds.shape or far.size == 0:
        raise ValueError('far %s and thresholds %s: expected two non-empty 1-D arrays '
                         'of equal length' % (far.shape, thresholds.shape))
    if np.any(np.diff(far) < 0):
        raise ValueError('far must be non-decreasing along the thresholds')
    if far[-1] < far_target:
        return 0.0
    upper = int(np.searchsorted(far, far_target, side='right'))
    if upper == 0:
        return float(thresholds[0])
    if upper < far.size:
        lower = upper - 1
    else:  # far_target equals the last plateau: bracket it from the one before
        upper = far.size - 1
        lower = int(np.searchsorted(far, far[upper], side='left')) - 1
        if lower < 0:
            return float(thresholds[upper])
    far_lower, far_upper = far[lower], far[upper]
    weight = 1.0 / (far_upper - far_lower)
    return float(thresholds[lower] * (weight * (far_upper - far_target))
                 + thresholds[upper] * (weight * (far_target - far_lower)))


def _roc(thresholds, dist, actual_issame, nrof_folds):
    """Cross-validated ROC on distances; also returns each fold's best index."""
    folds = fold_indices(dist.shape[0], nrof_folds)
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    best_indices = np.zeros(nrof_folds, np.int64)
    for fold_idx, (train_set, test_set) in enumerate(folds):
        _, _, acc_train = calculate_accuracy(thresholds, dist[train_set], actual_issame[train_set])
        best_indices[fold_idx] = np.argmax(acc_train)  # first maximum, as the reference
        tprs[fold_idx], fprs[fold_idx], acc_test = calculate_accuracy(
            thresholds, dist[test_set], actual_issame[test_set])
        accuracy[fold_idx] = acc_test[best_indices[fold_idx]]
    return np.mean(tprs, 0), np.mean(fprs, 0), accuracy, best_indices


def _val(thresholds, dist, actual_issame, far_target, nrof_folds):
    """Cross-validated VAL@FAR on distances: (val_mean, val_std, far_mean)."""
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(fold_indices(dist.shape[0], nrof_folds)):
        _, far_train = calculate_val_far(thresholds, dist[train_set], actual_issame[train_set])
        threshold = threshold_at_far(far_train, thresholds, far_target)
        val[fold_idx], far[fold_idx] = calculate_val_far(
            threshold, dist[test_set], actual_issame[test_set])
    return np.mean(val), np.std(val), np.mean(far)


def _pair_distances(embeddings, actual_issame):
    """Validates an interleaved pair set; returns (dist [N/2], bool issame [N/2]).

    The fold count is checked by `fold_indices`, before any fold is scored.
    """
    shape = np.shape(embeddings)
    if len(shape) != 2:
        raise ValueError('embeddings has shape %s; expected 2-D [2 * nrof_pairs, dim]'
                         % (shape,))
    if shape[0] % 2:
        raise ValueError('embeddings has %d rows; expected an even number (pairs are rows '
                         '2k and 2k+1)' % shape[0])
    nrof_pairs = shape[0] // 2
    if np.ndim(actual_issame) != 1 or len(actual_issame) != nrof_pairs:
        raise ValueError('actual_issame has shape %s; expected one entry per pair, (%d,)'
                         % (np.shape(actual_issame), nrof_pairs))
    return (distance(embeddings[0::2], embeddings[1::2]),
            np.asarray(actual_issame).astype(bool))


def evaluate(embeddings, actual_issame, nrof_folds=NROF_FOLDS):
    """insightface's `evaluate`: accuracy/ROC and VAL@FAR of an interleaved pair set.

    Args:
      embeddings: float [2 * nrof_pairs, D], already L2-normalised by the
        caller (as in insightface; `evaluate_flip` does it). Pair k is rows
        2k and 2k+1.
      actual_issame: bool [nrof_pairs].
      nrof_folds: int in [1, nrof_pairs].
    Returns:
      tpr, fpr: float64 [len(ACCURACY_THRESHOLDS)], mean test-fold rates.
      accuracy: float64 [nrof_folds], test-fold accuracies.
      val, val_std, far: float64, VAL@FAR_TARGET statistics over folds.
    Raises:
      ValueError: if embeddings is not 2-D with an even number of rows,
        actual_issame has not one entry per pair, or nrof_folds is not in
        [1, nrof_pairs].
    """
    dist, actual_issame = _pair_distances(embeddings, actual_issame)
    tpr, fpr, accuracy, _ = _roc(ACCURACY_THRESHOLDS, dist, actual_issame, nrof_folds)
    val, val_std, far = _val(VAL_THRESHOLDS, dist, actual_issame, FAR_TARGET, nrof_folds)
    return tpr, fpr, accuracy, val, val_std, far


def combine_flip(embeddings, flipped_embeddings):
    """The embeddings the protocol scores: each row plus its mirror's, L2-normalised.

    Args:
      embeddings, flipped_embeddings: float [N, D], raw.
    Returns:
      float64 [N, D], the only float64 copy made.
    """
    combined = np.array(embeddings, np.float64)
    combined += flipped_embeddings
    norms = np.sqrt(np.einsum('ij,ij->i', combined, combined))
    norms[norms == 0.0] = 1.0  # a zero row stays 0, as sklearn's `normalize`
    combined /= norms[:, np.newaxis]
    return combined


def evaluate_flip(embeddings, flipped_embeddings, actual_issame, nrof_folds=NROF_FOLDS):
    """Scores a set embedded with and without horizontal flip (insightface's `test`).

    Args:
      embeddings: float [2 * nrof_pairs, D], raw (unnormalised) embeddings.
      flipped_embeddings: float [2 * nrof_pairs, D], of the mirrored images.
      actual_issame: bool [nrof_pairs].
      nrof_folds: int in [1, nrof_pairs].
    Returns:
      VerificationResult: `evaluate` on combine_flip(embeddings,
      flipped_embeddings) (summed, then normalised); xnorm, the mean row norm
      of both raw arrays (the reference's sum differs only in rounding);
      `threshold`, the best accuracy threshold on all pairs (first maximum),
      the value to deploy; `fold_thresholds`, those of the train splits.
    Raises:
      ValueError: as `evaluate`, or if the two arrays differ in shape.
    """
    if np.ndim(embeddings) != 2 or np.shape(embeddings) != np.shape(flipped_embeddings):
        raise ValueError('embeddings %s and flipped_embeddings %s: expected two 2-D arrays '
                         'of the same shape'
                         % (np.shape(embeddings), np.shape(flipped_embeddings)))
    row_norms = [np.sqrt(np.einsum('ij,ij->i', e, e, dtype=np.float64))
                 for e in (embeddings, flipped_embeddings)]
    xnorm = float(np.mean(np.concatenate(row_norms)))
    dist, actual_issame = _pair_distances(combine_flip(embeddings, flipped_embeddings),
                                          actual_issame)
    tpr, fpr, accuracy, best = _roc(ACCURACY_THRESHOLDS, dist, actual_issame, nrof_folds)
    val, val_std, far = _val(VAL_THRESHOLDS, dist, actual_issame, FAR_TARGET, nrof_folds)
    _, _, acc_all = calculate_accuracy(ACCURACY_THRESHOLDS, dist, actual_issame)
    return VerificationResult(
        accuracy=float(np.mean(accuracy)), accuracy_std=float(np.std(accuracy)),
        val=float(val), val_std=float(val_std), far=float(far),
        threshold=float(ACCURACY_THRESHOLDS[np.argmax(acc_all)]),
        fold_thresholds=ACCURACY_THRESHOLDS[best], xnorm=xnorm,
        nrof_pairs=int(dist.shape[0]), tpr=tpr, fpr=fpr)


def _embed_pass(sess, images_placeholder, embedding_tensor, images, rows, batch_size, feed,
                flip, on_batch):
    """Embeds images[rows] (mirrored if `flip`); returns float32 [len(rows), D]."""
    nrof_images = len(rows)
    embeddings = None
    for start in range(0, nrof_images, batch_size):
        stop = min(start + batch_size, nrof_images)
        # Rows [start, stop) are the tail of a full batch: the last partial batch is the
        # window ending at the last row (insightface's trick), and a set smaller than one
        # batch is padded by repeating it (indices modulo N).
        batch = images[rows[np.arange(stop - batch_size, stop) % nrof_images]]
        if flip:
            batch = np.ascontiguousarray(batch[:, :, ::-1, :])
        feed[images_placeholder] = batch
        batch_embeddings = sess.run(embedding_tensor, feed_dict=feed)
        if np.ndim(batch_embeddings) != 2 or batch_embeddings.shape[0] != batch_size:
            raise ValueError('embedding_tensor gave shape %s for a batch of %d; expected '
                             '[batch_size, dim]' % (np.shape(batch_embeddings), batch_size))
        if embeddings is None:
            embeddings = np.empty((nrof_images, batch_embeddings.shape[1]), np.float32)
        embeddings[start:stop] = batch_embeddings[batch_size - (stop - start):]
        if on_batch is not None:
            on_batch(stop - start)
    return embeddings


def embed_images(sess, images_placeholder, embedding_tensor, images, batch_size,
                 extra_feed=None, on_batch=None):
    """Embeds a verification set and its horizontal mirror in fixed-size batches.

    Args:
      sess: a TF session running the graph.
      images_placeholder: uint8 [batch_size, H, W, 3] placeholder of RAW BGR
        pixels (the graph normalises them, see data.image_ops.normalize).
      embedding_tensor: float [batch_size, D] tensor.
      images: uint8 [N, H, W, 3] BGR array; never copied whole (the mirror is
        built batch by batch).
      batch_size: int, the placeholder's static batch dimension.
      extra_feed: optional dict of further feeds (e.g. is_training: False);
        not modified.
      on_batch: optional fn(n), called after each batch with the n distinct
        images it embedded (twice as many calls in all: image and mirror);
        e.g. a progress bar's update.
    Returns:
      (embeddings, flipped_embeddings): float32 [N, D] each, row i of the
      second being the embedding of images[i, :, ::-1, :].

    Each distinct image is embedded once and its rows share the result:
    verification sets can repeat images (orl_val.bin's 900 rows hold 50), and
    an image's embedding does not depend on its batch neighbours.
    Raises:
      ValueError: on a malformed image array, a non-positive batch size, a
        placeholder whose static batch dimension is not batch_size, or an
        embedding tensor that is not [batch_size, D].
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError('images has shape %s; expected [N >= 1, H, W, 3]' % (images.shape,))
    if images.dtype != np.uint8:
        raise ValueError('images has dtype %s; expected raw uint8 pixels' % images.dtype)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError('batch_size=%r: expected a positive int' % (batch_size,))
    shape = images_placeholder.shape
    static_batch = shape.as_list()[0] if shape.ndims is not None else None
    if static_batch is not None and static_batch != batch_size:
        raise ValueError('images_placeholder has static batch dimension %d; expected '
                         'batch_size=%d' % (static_batch, batch_size))
    feed = dict(extra_feed or {})
    rows, inverse = distinct_images(images)
    passes = tuple(_embed_pass(sess, images_placeholder, embedding_tensor, images, rows,
                               batch_size, feed, flip, on_batch) for flip in (False, True))
    if len(rows) == len(images):
        return passes
    return tuple(embeddings[inverse] for embeddings in passes)


def run_verification(sess, images_placeholder, embedding_tensor, images, actual_issame,
                     batch_size, extra_feed=None, nrof_folds=NROF_FOLDS):
    """`embed_images` then `evaluate_flip`: one verification set through a session.

    Returns:
      VerificationResult; see `embed_images` and `evaluate_flip` for arguments.
    """
    embeddings, flipped = embed_images(sess, images_placeholder, embedding_tensor, images,
                                       batch_size, extra_feed)
    return evaluate_flip(embeddings, flipped, actual_issame, nrof_folds)
