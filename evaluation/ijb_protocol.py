"""IJB-B / IJB-C 1:1 verification: image features to templates, template pairs to TAR@FAR.

The numbers of insightface's `recognition/arcface_torch/eval_ijbc.py`, in its default
mode (flip "F2", norm score "N1", detector score "D1"), step by step:

1. image features (`image_features`): embedding of the crop + embedding of its mirror,
   kept unnormalised (its norm says how face-like the crop is), times the detector score;
2. template features (`template_features`): within a template, the images of one medium
   (the frames of one video, or one photo) are averaged, the media summed, the sum
   L2-normalised, so a long video weighs as much as a photo;
3. pair scores (`pair_scores`): the cosine of the two templates;
4. `roc`: sklearn's roc_curve (with its dropping of collinear points) and its AUC;
5. `tar_at_far`: TAR read at FAR 1e-6 ... 1e-1, at the ROC point whose FAR is nearest.

The reference loops in Python over templates and media; here one sort groups the
images (IJB-C: 469,375 images, 23,124 templates) and the pairs (15.7 M) are scored in
chunks, so no [pairs, D] array is built. Pooling runs in float64 (the reference keeps
its templates in float64 but averages and sums in the features' dtype). In float64 the
results equal the reference's (test/test_ijb_protocol.py runs both on the shared
IJB-like set).

Typical use:
    features = image_features(embeddings, flipped_embeddings, meta.detector_scores)
    templates, ids = template_features(features, meta.templates, meta.medias)
    scores = pair_scores(templates, ids, meta.t1, meta.t2)
    curve = roc(meta.labels, scores)
    tars = tar_at_far(curve.fpr, curve.tpr)     # TAR at FARS; the reference prints x100
or all five at once: verify(meta, embeddings, flipped_embeddings) -> Verified.
"""
import collections

import numpy as np

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the reference's table columns
PAIR_CHUNK = 100000  # pairs scored at once, the reference's batch
# Image rows template_features pools at once (more for a larger template): bounds its
# float64 copies to ~POOL_ROWS * D * 16 bytes.
POOL_ROWS = 1 << 14

Roc = collections.namedtuple('Roc', [
    'fpr',         # float64 [K], false accept rate, increasing from 0 to 1
    'tpr',         # float64 [K], true accept rate, increasing from 0 to 1
    'thresholds',  # float64 [K], score of each point, decreasing; thresholds[0] = inf
    'auc',         # float, trapezoidal area under (fpr, tpr)
])

Verified = collections.namedtuple('Verified', [
    'curve',   # Roc of all pairs
    'tars',    # float64 [len(FARS)], TAR at each of FARS
    'scores',  # float64 [P], the pair scores in the pairs file's order
])


def _l2_normalise_rows(features):
    """Rows divided by their L2 norms (sklearn's `normalize`: a zero row stays 0)."""
    norms = np.sqrt(np.einsum('ij,ij->i', features, features))
    norms[norms == 0.0] = 1.0
    return features / norms[:, np.newaxis]


def image_features(embeddings, flipped_embeddings, detector_scores, flip=True,
                   norm_score=True, detector_score=True):
    """The feature each image contributes to its template.

    Args:
      embeddings: float [N, D], raw (unnormalised) embeddings of the aligned crops.
      flipped_embeddings: float [N, D] of the mirrored crops; unused (may be None)
        without `flip`.
      detector_scores: float [N], the 5pts file's last column; unused (may be None)
        without `detector_score`.
      flip: sum both embeddings (the reference's "F2"); otherwise the first alone.
      norm_score: keep each feature's norm as a quality weight; otherwise
        L2-normalise every image's feature (a zero one stays 0).
      detector_score: multiply by the detector score.
    Returns:
      float [N, D], the embeddings' dtype (or wider); the input array itself when no
      option changes it.
    Raises:
      ValueError: shapes that do not match.
    """
    features = np.asarray(embeddings)
    if features.ndim != 2:
        raise ValueError('embeddings must be [N, D], got shape %s' % (features.shape,))
    if flip:
        flipped = np.asarray(flipped_embeddings)
        if flipped.shape != features.shape:
            raise ValueError('flipped embeddings %s differ in shape from embeddings %s'
                             % (flipped.shape, features.shape))
        features = features + flipped
    if not norm_score:
        norms = np.sqrt(np.sum(features ** 2, axis=-1, keepdims=True))
        norms[norms == 0.0] = 1.0
        features = features / norms
    if detector_score:
        scores = np.asarray(detector_scores)
        if scores.shape != features.shape[:1]:
            raise ValueError('detector scores %s do not match %d images'
                             % (scores.shape, features.shape[0]))
        features = features * scores[:, np.newaxis]
    return features


def template_features(image_features, templates, medias):
    """Pools image features into one L2-normalised feature per template.

    Within each template the images sharing a media id are averaged; the template is
    the normalised sum of its media. Media are grouped per template (a media id in
    two templates is two media), as the reference does.

    Args:
      image_features: float [N, D], from `image_features`.
      templates: int [N], template of each image.
      medias: int [N], media of each image.
    Returns:
      (features, template_ids): float64 [T, D], row t that of template_ids[t];
      int64 [T], the sorted distinct template ids.
    Raises:
      ValueError: shapes that do not match, or no images.
    """
    features = np.asarray(image_features)
    templates = np.asarray(templates, np.int64)
    medias = np.asarray(medias, np.int64)
    if (features.ndim != 2 or templates.shape != features.shape[:1]
            or medias.shape != templates.shape):
        raise ValueError('image features %s, templates %s and medias %s must be [N, D], '
                         '[N] and [N]' % (features.shape, templates.shape, medias.shape))
    if not templates.size:
        raise ValueError('no images to pool into templates')
    template_ids, template_index = np.unique(templates, return_inverse=True)
    order = np.lexsort((medias, template_index))  # stable: images keep their order
    sorted_templates = template_index[order]
    new_template = np.concatenate(([True], np.diff(sorted_templates) != 0))
    new_media = new_template | np.concatenate(([False], np.diff(medias[order]) != 0))
    pooled = np.empty((template_ids.size, features.shape[1]))
    for start, stop in _blocks_of_templates(np.flatnonzero(new_template), order.size):
        firsts = np.flatnonzero(new_media[start:stop])
        sizes = np.diff(np.append(firsts, stop - start))
        block = features[order[start:stop]].astype(np.float64, copy=False)
        means = _segment_sums(block, firsts)
        means /= sizes[:, np.newaxis]
        template_firsts = np.flatnonzero(new_template[start:stop][firsts])
        rows = slice(sorted_templates[start], sorted_templates[stop - 1] + 1)
        pooled[rows] = _segment_sums(means, template_firsts)
    return _l2_normalise_rows(pooled), template_ids


def _segment_sums(rows, firsts):
    """Sums of the runs of `rows` starting at `firsts` (increasing, from 0), each run
    added row after row as np.sum(..., axis=0) adds, so that float64 results equal the
    reference's bit for bit (np.add.reduceat rounds differently). One step per row of
    the longest run."""
    lengths = np.diff(np.append(firsts, len(rows)))
    sums = rows[firsts]
    for offset in range(1, int(lengths.max())):
        longer = np.flatnonzero(lengths > offset)
        sums[longer] += rows[firsts[longer] + offset]
    return sums


def _blocks_of_templates(template_starts, size):
    """(start, stop) spans of sorted image rows, about POOL_ROWS each, that never
    split a template, so that each is pooled whole."""
    start = 0
    while start < size:
        k = np.searchsorted(template_starts, start + POOL_ROWS)
        stop = template_starts[k] if k < template_starts.size else size
        yield start, stop
        start = stop


def pair_scores(template_feats, template_ids, t1, t2, chunk=PAIR_CHUNK):
    """Cosine similarity of every template pair, `chunk` pairs at a time.

    Args:
      template_feats: float [T, D], L2-normalised rows (`template_features`).
      template_ids: int [T], distinct, the id of each row.
      t1, t2: int [P], the templates of each pair.
      chunk: pairs per step: peak memory ~3 * chunk * D * 8 bytes.
    Returns:
      float64 [P].
    Raises:
      ValueError: a pair names a template without a feature.
    """
    feats = np.asarray(template_feats)
    ids = np.asarray(template_ids, np.int64)
    t1, t2 = np.asarray(t1, np.int64), np.asarray(t2, np.int64)
    if t1.shape != t2.shape or t1.ndim != 1:
        raise ValueError('t1 %s and t2 %s must both be [P]' % (t1.shape, t2.shape))
    by_id = np.argsort(ids, kind='stable')
    sorted_ids = ids[by_id]
    if np.any(np.diff(sorted_ids) == 0):
        raise ValueError('template ids are not distinct')
    scores = np.empty(t1.size)
    for start in range(0, t1.size, chunk):
        pairs = slice(start, start + chunk)
        first = feats[_rows_of(t1[pairs], sorted_ids, by_id, start)]
        second = feats[_rows_of(t2[pairs], sorted_ids, by_id, start)]
        scores[pairs] = np.sum(first * second, axis=-1)
    return scores


def _rows_of(wanted, sorted_ids, by_id, offset):
    """Feature rows of the template ids `wanted` (pairs from `offset` on)."""
    place = np.searchsorted(sorted_ids, wanted)
    found = place < sorted_ids.size
    found[found] = sorted_ids[place[found]] == wanted[found]
    if not found.all():
        k = int(np.argmin(found))
        raise ValueError('pair %d names template %d, which has no feature'
                         % (offset + k, wanted[k]))
    return by_id[place]


def roc(labels, scores):
    """The ROC curve as sklearn.metrics.roc_curve(labels, scores) gives it, and its AUC.

    Scores sorted from high to low; one point per distinct score (ties move together),
    counting the pairs at or above it; points collinear with both neighbours (the
    second difference of both counts is zero) dropped, as roc_curve's default
    drop_intermediate=True does; a first point (0, 0) at threshold +inf (sklearn >= 1.3;
    before, the highest score + 1). fpr and tpr equal sklearn's bit for bit.

    Args:
      labels: int or bool [P], 1 for a genuine pair, 0 for an impostor.
      scores: float [P], higher means more alike.
    Returns:
      Roc.
    Raises:
      ValueError: lengths differ, labels other than 0/1, a class without pairs, or a
        score that is not finite.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError('%d labels for %d scores' % (labels.size, scores.size))
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError('labels must be 0 or 1; got %s' % np.unique(labels)[:10].tolist())
    if not np.all(np.isfinite(scores)):
        raise ValueError('scores must be finite')
    genuine = int(np.count_nonzero(labels))
    if genuine in (0, labels.size):
        raise ValueError('a ROC needs genuine (1) and impostor (0) pairs; got %d and %d'
                         % (genuine, labels.size - genuine))
    order = np.argsort(-scores, kind='stable')
    sorted_scores = scores[order]
    last_of_each = np.append(np.flatnonzero(np.diff(sorted_scores)), scores.size - 1)
    tps = np.cumsum(labels[order], dtype=np.float64)[last_of_each]
    fps = 1.0 + last_of_each - tps
    thresholds = sorted_scores[last_of_each]
    if fps.size > 2:
        corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate(([True], corner, [True])))
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.append(0.0, fps), np.append(0.0, tps)
    thresholds = np.append(np.inf, thresholds)
    fpr, tpr = fps / fps[-1], tps / tps[-1]
    area = (np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum()  # np.trapz's formula
    return Roc(fpr=fpr, tpr=tpr, thresholds=thresholds, auc=float(area))


def tar_at_far(fpr, tpr, fars=FARS):
    """TAR at each FAR in `fars`, read off a ROC as the reference reads it.

    The reference reverses the curve (FAR decreasing) and takes, for each target, the
    first point whose FAR is nearest to it: of points with that same FAR, the one with
    the highest TAR; between two FARs equally near, the larger.

    Args:
      fpr, tpr: float [K], the ROC in roc_curve's order (FAR increasing).
      fars: target FARs.
    Returns:
      float64 [len(fars)], fractions (the reference prints 100 x with 2 decimals).
    """
    fpr = np.flipud(np.asarray(fpr, np.float64))
    tpr = np.flipud(np.asarray(tpr, np.float64))
    if fpr.shape != tpr.shape or fpr.ndim != 1 or not fpr.size:
        raise ValueError('fpr %s and tpr %s must both be [K], K > 0' % (fpr.shape, tpr.shape))
    return np.array([tpr[np.argmin(np.abs(fpr - far))] for far in fars])


def verify(meta, embeddings, flipped_embeddings, flip=True, norm_score=True,
           detector_score=True):
    """Steps 1-5 for a release's embeddings.

    Args:
      meta: the release's ijb_meta.IJBMeta (detector scores, templates, media, pairs).
      embeddings, flipped_embeddings, flip, norm_score, detector_score: as image_features.
    Returns:
      Verified.
    """
    features = image_features(embeddings, flipped_embeddings, meta.detector_scores, flip=flip,
                              norm_score=norm_score, detector_score=detector_score)
    pooled, ids = template_features(features, meta.templates, meta.medias)
    del features  # IJB-C: 1 GB, freed before the pairs are scored
    scores = pair_scores(pooled, ids, meta.t1, meta.t2)
    curve = roc(meta.labels, scores)
    return Verified(curve, tar_at_far(curve.fpr, curve.tpr), scores)
