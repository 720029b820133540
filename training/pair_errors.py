"""Where a verification set's errors come from: which identities, which pairs.

A .bin set holds pairs and same/different flags, no identity labels. Here
identical images count as one image (data.eval_data_reader.distinct_images),
and the same-identity pairs join images into identities (connected
components). At a result's threshold (the best on all pairs,
`VerificationResult.threshold`), the wrong pairs are counted as false rejects
per identity and false accepts per pair of identities.

When one identity holds many of the false rejects (a person photographed in two
very different sessions, say), the report also gives the accuracy that would
remain if every other pair were right: no model that embeds that identity the
same way can score higher. eval_ckpt_file.py prints this with --error_report.

Typical use:
    _, keys = eval_data_reader.distinct_images(images)
    report = breakdown(embeddings, flipped, issame, result.threshold, keys)
    print('\\n'.join(format_report('orl_val', report)))
"""
import collections

import numpy as np

import verification

Breakdown = collections.namedtuple('Breakdown', [
    'nrof_pairs',       # int
    'errors',           # int, wrong pairs at `threshold`
    'threshold',        # float, squared-L2 threshold used
    'first_image',      # int [K], .bin row of each identity's first image
    'identity_sizes',   # int [K], distinct images per identity
    'same_pairs',       # Counter {identity: same pairs}
    'false_rejects',    # Counter {identity: same pairs judged different}
    'different_pairs',  # Counter {(identity, identity): different pairs}, a < b
    'false_accepts',    # Counter {(identity, identity): different pairs judged same}
])


def identities(keys, actual_issame):
    """Identity of every .bin row: connected components of the same pairs.

    Args:
      keys: [2 * nrof_pairs] hashable image keys, equal for identical images
        (e.g. the `inverse` of eval_data_reader.distinct_images); pair k is rows
        2k and 2k+1.
      actual_issame: bool [nrof_pairs].
    Returns:
      (labels, first_image): int [2 * nrof_pairs] identity per row, numbered
      in order of first appearance; int [K] the row where each first appears.
    """
    parent = {}

    def root(key):
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for k, same in enumerate(actual_issame):
        first, second = root(keys[2 * k]), root(keys[2 * k + 1])
        if same and first != second:
            parent[second] = first
    numbers, labels, first_image = {}, [], []
    for row, key in enumerate(keys):
        group = root(key)
        if group not in numbers:
            numbers[group] = len(numbers)
            first_image.append(row)
        labels.append(numbers[group])
    return np.array(labels, np.int64), np.array(first_image, np.int64)


def breakdown(embeddings, flipped_embeddings, actual_issame, threshold, keys):
    """Counts the wrong pairs at `threshold` by identity.

    Args:
      embeddings, flipped_embeddings: float [2 * nrof_pairs, D], raw, as for
        verification.evaluate_flip (summed, then L2-normalised).
      actual_issame: bool [nrof_pairs].
      threshold: float; pairs with squared L2 distance below it are judged same.
      keys: [2 * nrof_pairs] image keys, as for `identities`.
    Returns:
      Breakdown.
    """
    actual_issame = np.asarray(actual_issame, bool)
    combined = verification.combine_flip(embeddings, flipped_embeddings)
    dist = verification.distance(combined[0::2], combined[1::2])
    wrong = np.less(dist, threshold) != actual_issame
    labels, first_image = identities(keys, actual_issame)
    label_of_image = dict(zip(keys, labels))
    sizes = np.bincount(np.array(list(label_of_image.values()), np.int64),
                        minlength=len(first_image))
    same_pairs, false_rejects = collections.Counter(), collections.Counter()
    different_pairs, false_accepts = collections.Counter(), collections.Counter()
    for k, (same, error) in enumerate(zip(actual_issame, wrong)):
        first, second = labels[2 * k], labels[2 * k + 1]
        if same:
            same_pairs[first] += 1
            if error:
                false_rejects[first] += 1
        else:
            pair = (min(first, second), max(first, second))
            different_pairs[pair] += 1
            if error:
                false_accepts[pair] += 1
    return Breakdown(nrof_pairs=len(actual_issame), errors=int(wrong.sum()),
                     threshold=float(threshold), first_image=first_image,
                     identity_sizes=sizes, same_pairs=same_pairs, false_rejects=false_rejects,
                     different_pairs=different_pairs, false_accepts=false_accepts)


def ceiling(report):
    """(identity, accuracy): the identity with the most false rejects, and the
    accuracy if those stay wrong and every other pair is right; (None, 1.0)
    without false rejects."""
    if not report.false_rejects:
        return None, 1.0
    identity, count = max(report.false_rejects.items(), key=lambda item: (item[1], -item[0]))
    return identity, 1.0 - count / float(report.nrof_pairs)


def format_report(name, report, top=5):
    """Human-readable lines: totals, the `top` worst identities and identity pairs."""
    lines = ['[%s] errors at threshold %.2f: %d of %d pairs (%d false rejects, %d false '
             'accepts); %d identities'
             % (name, report.threshold, report.errors, report.nrof_pairs,
                sum(report.false_rejects.values()), sum(report.false_accepts.values()),
                len(report.first_image))]
    for identity, count in report.false_rejects.most_common(top):
        lines.append('[%s]   false rejects: identity of image %d (%d images): %d of its %d '
                     'same pairs' % (name, report.first_image[identity],
                                     report.identity_sizes[identity], count,
                                     report.same_pairs[identity]))
    for (first, second), count in report.false_accepts.most_common(top):
        lines.append('[%s]   false accepts: identities of images %d and %d: %d of their %d '
                     'different pairs' % (name, report.first_image[first],
                                          report.first_image[second], count,
                                          report.different_pairs[(first, second)]))
    identity, best = ceiling(report)
    if identity is not None:
        lines.append('[%s]   while the identity of image %d keeps its %d false rejects, '
                     'accuracy is at most %.5f' % (name, report.first_image[identity],
                                                   report.false_rejects[identity], best))
    return lines
