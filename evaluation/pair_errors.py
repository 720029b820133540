"""Where a verification set's errors come from: which groups of images, which pairs.

A .bin set holds pairs and same/different flags, no identity labels. Here
identical images count as one image (data.eval_data_reader.distinct_images),
and the same-person pairs link images into groups (connected components): where
images repeat across pairs, as in ORL's and LFW's sets, a group is a person (or
the part of one that the pairs link). At a result's threshold (the best on all
pairs, `VerificationResult.threshold`), the wrong pairs are counted as false
rejects per group and false accepts per pair of groups.

When one group holds many of the false rejects (a person photographed in two
very different sessions, say), the report also gives the accuracy that would
remain if every other pair were right: no model that embeds that group the
same way can score higher. Where no group is in more than one pair (every
image in one pair only, as in the demo's synthetic set), counts by group would
only repeat the pairs, so the report lists the wrong pairs themselves instead,
farthest from the threshold first. eval_ckpt_file.py prints this with
--error_report.

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
    'first_image',      # int [K], .bin row of each group's first image
    'group_sizes',      # int [K], distinct images per group
    'same_pairs',       # Counter {group: same pairs}
    'false_rejects',    # Counter {group: same pairs judged different}
    'different_pairs',  # Counter {(group, group): different pairs}, a < b
    'false_accepts',    # Counter {(group, group): different pairs judged same}
    'distances',        # float [nrof_pairs], squared L2 distance of each pair
    'actual_issame',    # bool [nrof_pairs]
])


def groups(keys, actual_issame):
    """Group of every .bin row: connected components of the same pairs.

    Args:
      keys: [2 * nrof_pairs] hashable image keys, equal for identical images
        (e.g. the `inverse` of eval_data_reader.distinct_images); pair k is rows
        2k and 2k+1.
      actual_issame: bool [nrof_pairs].
    Returns:
      (labels, first_image): int [2 * nrof_pairs] group per row, numbered
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
    """Counts the wrong pairs at `threshold` by group.

    Args:
      embeddings, flipped_embeddings: float [2 * nrof_pairs, D], raw, as for
        verification.evaluate_flip (summed, then L2-normalised).
      actual_issame: bool [nrof_pairs].
      threshold: float; pairs with squared L2 distance below it are judged same.
      keys: [2 * nrof_pairs] image keys, as for `groups`.
    Returns:
      Breakdown.
    """
    actual_issame = np.asarray(actual_issame, bool)
    combined = verification.combine_flip(embeddings, flipped_embeddings)
    dist = verification.distance(combined[0::2], combined[1::2])
    wrong = np.less(dist, threshold) != actual_issame
    labels, first_image = groups(keys, actual_issame)
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
                     group_sizes=sizes, same_pairs=same_pairs, false_rejects=false_rejects,
                     different_pairs=different_pairs, false_accepts=false_accepts,
                     distances=dist, actual_issame=actual_issame)


def ceiling(report):
    """(group, accuracy): the group with the most false rejects, and the
    accuracy if those stay wrong and every other pair is right; (None, 1.0)
    without false rejects."""
    if not report.false_rejects:
        return None, 1.0
    identity, count = max(report.false_rejects.items(), key=lambda item: (item[1], -item[0]))
    return identity, 1.0 - count / float(report.nrof_pairs)


def groups_repeat(report):
    """True when some group is in more than one pair: counts by group then say more
    than the pairs do."""
    return max(list(report.same_pairs.values()) + list(report.different_pairs.values())
               + [0]) > 1


def format_report(name, report, top=5):
    """Human-readable lines: totals, then the `top` worst groups and pairs of groups, or,
    where no group is in more than one pair, the `top` wrong pairs of each kind."""
    lines = ['[%s] errors at threshold %.2f: %d of %d pairs (%d false rejects, %d false '
             'accepts); %d groups of images linked by same-person pairs (the .bin holds no '
             'identity labels)'
             % (name, report.threshold, report.errors, report.nrof_pairs,
                sum(report.false_rejects.values()), sum(report.false_accepts.values()),
                len(report.first_image))]
    if not groups_repeat(report):
        return lines + _wrong_pairs(name, report, top)
    for group, count in report.false_rejects.most_common(top):
        lines.append('[%s]   false rejects: group of image %d (%d images): %d of its %d '
                     'same pairs' % (name, report.first_image[group],
                                     report.group_sizes[group], count,
                                     report.same_pairs[group]))
    for (first, second), count in report.false_accepts.most_common(top):
        lines.append('[%s]   false accepts: groups of images %d and %d: %d of their %d '
                     'different pairs' % (name, report.first_image[first],
                                          report.first_image[second], count,
                                          report.different_pairs[(first, second)]))
    group, best = ceiling(report)
    if group is not None:
        lines.append('[%s]   while the group of image %d keeps its %d false rejects, '
                     'accuracy is at most %.5f' % (name, report.first_image[group],
                                                   report.false_rejects[group], best))
    return lines


def _wrong_pairs(name, report, top):
    """The wrong pairs farthest from the threshold: same pairs farthest apart, then
    different pairs closest together."""
    same = np.asarray(report.actual_issame, bool)
    wrong = np.less(report.distances, report.threshold) != same
    rejects = [k for k in np.argsort(-report.distances, kind='stable') if wrong[k] and same[k]]
    accepts = [k for k in np.argsort(report.distances, kind='stable')
               if wrong[k] and not same[k]]
    lines = []
    if rejects or accepts:
        lines.append('[%s]   no group is in more than one pair, so the groups add nothing to '
                     'the pairs; the wrong pairs, farthest from the threshold first:' % name)
    for kind, pairs in (('false reject', rejects[:top]), ('false accept', accepts[:top])):
        for k in pairs:
            lines.append('[%s]   %s: pair %d (rows %d, %d), distance %.2f'
                         % (name, kind, k, 2 * k, 2 * k + 1, report.distances[k]))
    return lines
