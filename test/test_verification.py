"""Tests for verification.py.

The core check compares `verification.evaluate` with `ref_evaluate`, a slow
loop-by-loop implementation of insightface's protocol written here from its
description (hand-written K-fold split, one pass over the pairs per threshold,
bracketing thresholds found by a loop), and demands equality to the last bit.
verification.py was also checked once against the verbatim insightface code, run
with scipy 1.17.1, scikit-learn 1.9.1 and numpy 2.4 on 120,000-pair sets where it
does not crash: all six outputs identical.
"""
import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import verification
from data import eval_data_reader

# The protocol's constants, written again rather than imported.
REF_ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01).tolist()
REF_VAL_THRESHOLDS = np.arange(0, 4, 0.001).tolist()
REF_FAR_TARGET = 1e-3


# ---------------------------------------------------------------------------
# Slow reference implementation of the protocol.
# ---------------------------------------------------------------------------
def ref_kfold(nrof_pairs, nrof_folds):
    """Unshuffled K-fold; the first n % k folds hold one extra pair; k=1: train=test=all."""
    if nrof_folds == 1:
        everything = list(range(nrof_pairs))
        return [(everything, everything)]
    folds = []
    start = 0
    for fold in range(nrof_folds):
        size = nrof_pairs // nrof_folds
        if fold < nrof_pairs % nrof_folds:
            size += 1
        test = list(range(start, start + size))
        train = [i for i in range(nrof_pairs) if i < start or i >= start + size]
        folds.append((train, test))
        start += size
    return folds


def ref_confusion(threshold, dists, labels):
    tp = fp = tn = fn = 0
    for dist, same in zip(dists, labels):
        if dist < threshold:
            if same:
                tp += 1
            else:
                fp += 1
        elif same:
            fn += 1
        else:
            tn += 1
    return tp, fp, tn, fn


def ref_accuracy(threshold, dists, labels):
    tp, fp, tn, fn = ref_confusion(threshold, dists, labels)
    tpr = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / len(dists)


def ref_val_far(threshold, dists, labels):
    tp, fp, tn, fn = ref_confusion(threshold, dists, labels)
    val = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    far = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return val, far


def ref_threshold_at_far(far, thresholds, target):
    """Last threshold of the plateau below / first of the plateau above, interp1d's formula."""
    if max(far) < target:
        return 0.0
    lower = None
    for i in range(len(far)):
        if far[i] <= target:
            lower = i
    if lower is None:
        return thresholds[0]
    if lower + 1 < len(far):
        upper = lower + 1
    else:  # target equals the last plateau: bracket it with the plateau before
        upper = lower
        lower = None
        for i in range(len(far)):
            if far[i] < far[upper]:
                lower = i
        if lower is None:
            return thresholds[upper]
    weight = 1.0 / (far[upper] - far[lower])
    return (thresholds[lower] * (weight * (far[upper] - target))
            + thresholds[upper] * (weight * (target - far[lower])))


def ref_evaluate(embeddings, issame, nrof_folds):
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1)
    dists = [float(d) for d in dist]
    labels = [bool(s) for s in issame]
    folds = [([dists[i] for i in train], [labels[i] for i in train],
              [dists[i] for i in test], [labels[i] for i in test])
             for train, test in ref_kfold(len(dists), nrof_folds)]

    thresholds = REF_ACCURACY_THRESHOLDS
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    for f, (train_d, train_l, test_d, test_l) in enumerate(folds):
        best_index, best_acc = 0, -1.0
        for i, threshold in enumerate(thresholds):
            acc = ref_accuracy(threshold, train_d, train_l)[2]
            if acc > best_acc:  # strict: the first maximum wins
                best_index, best_acc = i, acc
        for i, threshold in enumerate(thresholds):
            tprs[f, i], fprs[f, i], _ = ref_accuracy(threshold, test_d, test_l)
        accuracy[f] = ref_accuracy(thresholds[best_index], test_d, test_l)[2]

    thresholds = REF_VAL_THRESHOLDS
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    for f, (train_d, train_l, test_d, test_l) in enumerate(folds):
        far_train = [ref_val_far(t, train_d, train_l)[1] for t in thresholds]
        threshold = ref_threshold_at_far(far_train, thresholds, REF_FAR_TARGET)
        val[f], far[f] = ref_val_far(threshold, test_d, test_l)
    return np.mean(tprs, 0), np.mean(fprs, 0), accuracy, np.mean(val), np.std(val), np.mean(far)


# ---------------------------------------------------------------------------
# Data sets.
# ---------------------------------------------------------------------------
def interleave(first, second):
    out = np.empty((2 * len(first), first.shape[1]), first.dtype)
    out[0::2], out[1::2] = first, second
    return out


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_pairs(nrof_pairs, dim, noise, seed, dtype=np.float64):
    """Unit embeddings; same pairs are two noisy views of one identity."""
    rng = np.random.RandomState(seed)
    issame = rng.rand(nrof_pairs) < 0.5
    first_id = rng.randn(nrof_pairs, dim)
    second_id = np.where(issame[:, None], first_id, rng.randn(nrof_pairs, dim))
    first = normalized(first_id + noise * rng.randn(nrof_pairs, dim))
    second = normalized(second_id + noise * rng.randn(nrof_pairs, dim))
    return interleave(first, second).astype(dtype), issame


def grid_roots(grid):
    """x with x * x exactly equal to a grid value (a squared distance on the grid)."""
    roots = []
    for value in grid:
        root = np.sqrt(value)
        for candidate in (root, np.nextafter(root, 0.0), np.nextafter(root, 4.0)):
            if candidate * candidate == value:
                roots.append(candidate)
                break
    return np.array(roots)


def ties_on_grid(nrof_pairs, seed):
    """1-D pairs (x, 0) whose distances x*x lie exactly on the threshold grids."""
    rng = np.random.RandomState(seed)
    roots = np.concatenate([grid_roots(REF_ACCURACY_THRESHOLDS[1:]),
                            grid_roots(REF_VAL_THRESHOLDS[1:400])])
    assert len(roots) > 200, 'too few exact grid distances to test ties'
    first = rng.choice(roots, nrof_pairs)[:, None]
    return interleave(first, np.zeros_like(first)), rng.rand(nrof_pairs) < 0.5


def float32_ties(nrof_pairs, seed):
    """float32 pairs whose distances are the grid values rounded to float32.

    Distances are compared with the float64 thresholds, so a distance equal to
    float32(t) < t is below t (numpy 1.x's value-based casting would have
    compared in float32 and called it a tie).
    """
    rng = np.random.RandomState(seed)
    grid = np.float32(REF_ACCURACY_THRESHOLDS[1:] + REF_VAL_THRESHOLDS[1:400])
    roots = []
    for value in grid:
        root = np.sqrt(value)
        neighbours = np.nextafter(root, np.float32(0)), np.nextafter(root, np.float32(4))
        for candidate in (root,) + neighbours:
            if candidate * candidate == value:
                roots.append(candidate)
                break
    first = rng.choice(np.array(roots, np.float32), nrof_pairs)[:, None]
    return interleave(first, np.zeros_like(first)), rng.rand(nrof_pairs) < 0.5


def identical_pairs(nrof_pairs, seed):
    """Mostly distance-0 pairs (same and different), a few far apart."""
    rng = np.random.RandomState(seed)
    first = normalized(rng.randn(nrof_pairs, 4))
    second = first.copy()
    moved = rng.rand(nrof_pairs) < 0.3
    second[moved] = -first[moved]
    return interleave(first, second), rng.rand(nrof_pairs) < 0.5


def plateau_pairs(nrof_pairs, seed):
    """Distances from three values only: long plateaus and repeated FARs."""
    rng = np.random.RandomState(seed)
    first = np.zeros((nrof_pairs, 3))
    second = np.zeros((nrof_pairs, 3))
    second[:, 0] = rng.choice([0.5, 1.0, 1.5], nrof_pairs)  # distances .25, 1, 2.25
    return interleave(first, second), rng.rand(nrof_pairs) < 0.5


def sorted_labels(nrof_same, nrof_diff, seed):
    """Same pairs first, then different ones: whole folds of one kind."""
    embeddings, _ = clustered_pairs(nrof_same + nrof_diff, 6, 0.6, seed)
    return embeddings, np.array([True] * nrof_same + [False] * nrof_diff)


CASES = {
    'clusters_53_pairs': (lambda: clustered_pairs(53, 8, 0.8, 0), (10, 2, 1)),
    'float32_512d': (lambda: clustered_pairs(41, 512, 1.0, 1, np.float32), (10,)),
    'float32_8d': (lambda: clustered_pairs(37, 8, 0.7, 2, np.float32), (10, 3)),
    'ties_on_grid': (lambda: ties_on_grid(47, 3), (10, 4, 1)),
    'float32_ties': (lambda: float32_ties(45, 15), (10,)),
    'identical_pairs': (lambda: identical_pairs(31, 4), (10, 2)),
    'plateaus': (lambda: plateau_pairs(43, 5), (10, 1)),
    'same_then_diff': (lambda: sorted_labels(20, 20, 6), (10, 2)),
    'all_same': (lambda: sorted_labels(25, 0, 7), (10,)),
    'all_diff': (lambda: sorted_labels(0, 25, 8), (10,)),
    'one_pair_per_fold': (lambda: clustered_pairs(7, 5, 0.8, 9), (7,)),
}


@pytest.mark.parametrize('name,nrof_folds', [(name, k) for name, (_, folds) in sorted(CASES.items())
                                             for k in folds])
def test_evaluate_equals_reference_bit_for_bit(name, nrof_folds):
    embeddings, issame = CASES[name][0]()
    got = verification.evaluate(embeddings, issame, nrof_folds)
    expected = ref_evaluate(embeddings, issame, nrof_folds)
    for label, g, e in zip(['tpr', 'fpr', 'accuracy', 'val', 'val_std', 'far'], got, expected):
        np.testing.assert_array_equal(g, e, err_msg='%s differs (%s, %d folds)'
                                      % (label, name, nrof_folds))


def test_reference_cases_cover_the_edge_cases():
    """Guards the data sets above against silently losing what they test."""
    embeddings, issame = ties_on_grid(47, 3)
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1)
    assert np.isin(dist, REF_ACCURACY_THRESHOLDS).sum() >= 10
    assert np.isin(dist, REF_VAL_THRESHOLDS).sum() >= 20
    embeddings, _ = float32_ties(45, 15)
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1)
    assert dist.dtype == np.float32
    grid = np.array(REF_ACCURACY_THRESHOLDS)
    rounded_down = np.float32(grid)[np.float32(grid) < grid]  # float32(t) < t
    assert np.isin(dist, rounded_down).sum() >= 5
    embeddings, _ = identical_pairs(31, 4)
    assert (np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1) == 0).sum() >= 10
    tpr, fpr, accuracy, val, _, _ = verification.evaluate(*clustered_pairs(53, 8, 0.8, 0))
    assert 0.7 < np.mean(accuracy) < 1.0 and 0.0 < val < 1.0  # neither trivial nor random


def test_known_answer_two_folds():
    # 1-D pairs; distances 0.25 (same), 1.0 (diff), 0.0 (same), 0.25 (diff).
    embeddings = np.array([[0.5], [0.0], [1.0], [0.0], [0.0], [0.0], [0.5], [0.0]])
    issame = [True, False, True, False]
    tpr, fpr, accuracy, val, val_std, far = verification.evaluate(embeddings, issame, 2)
    # Fold 0 trains on pairs 2, 3 -> threshold 0.01 (first perfect one); pair 0
    # (0.25, same) is then rejected: accuracy 1/2. Fold 1 trains on pairs 0, 1 ->
    # threshold 0.26; pair 3 (0.25, diff) is accepted: accuracy 1/2.
    np.testing.assert_array_equal(accuracy, [0.5, 0.5])
    expected_tpr = np.concatenate([[0.0], np.full(25, 0.5), np.full(374, 1.0)])
    expected_fpr = np.concatenate([np.zeros(26), np.full(75, 0.5), np.full(299, 1.0)])
    np.testing.assert_array_equal(tpr, expected_tpr)
    np.testing.assert_array_equal(fpr, expected_fpr)
    # VAL thresholds: just above 0.25 (fold 0) and 1.0 (fold 1); both same pairs
    # are accepted, pair 3 is a false accept in fold 1.
    assert (val, val_std, far) == (1.0, 0.0, 0.5)


def exact_plateau_set():
    """nrof_folds=1 set whose FAR curve has a plateau at exactly FAR_TARGET.

    1000 different pairs at distances 0.5, 3.0 and 4.0 (x998): FAR is 0.001 for
    thresholds in (0.5, 3.0]. Same pairs at 0.75, ~2.9995 and 3.5.
    """
    diff = [[0.5, 0.5, 0, 0], [1, 1, 1, 0]] + [[2, 0, 0, 0]] * 998
    same = [[0.5, 0.5, 0.5, 0], [np.sqrt(2.9995), 0, 0, 0], [1, 1, 1, 0.5]]
    second = np.array(diff + same, np.float64)
    issame = np.array([False] * len(diff) + [True] * len(same))
    return interleave(np.zeros_like(second), second), issame


def test_far_target_on_a_plateau_takes_its_largest_threshold():
    embeddings, issame = exact_plateau_set()
    dist = verification.distance(embeddings[0::2], embeddings[1::2])
    _, far_curve = verification.calculate_val_far(verification.VAL_THRESHOLDS, dist, issame)
    assert far_curve[3000] == verification.FAR_TARGET and far_curve[3001] > far_curve[3000]
    threshold = verification.threshold_at_far(far_curve, verification.VAL_THRESHOLDS,
                                              verification.FAR_TARGET)
    assert threshold == 3.0
    # The smallest threshold of the plateau (0.501) would accept no same pair.
    _, _, _, val, val_std, far = verification.evaluate(embeddings, issame, 1)
    assert (val, val_std, far) == (2.0 / 3.0, 0.0, 0.001)


@pytest.mark.parametrize('target,expected', [
    (0.25, 1.5),   # between plateaus 0 (last at 1) and 0.5 (first at 2)
    (0.5, 3.0),    # exactly on the 0.5 plateau: its largest threshold
    (0.75, 3.5),   # between plateaus 0.5 (last at 3) and 1 (first at 4)
    (1.0, 5.0),    # exactly on the final plateau: its largest threshold
    (1.5, 0.0),    # never reached: 0.0, as the reference
    (0.0, 1.0),    # on the first plateau
])
def test_threshold_at_far_with_repeated_far_values(target, expected):
    far = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    thresholds = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert verification.threshold_at_far(far, thresholds, target) == expected


def scipy_test_curve(seed):
    """Strictly increasing FAR curve over the VAL grid (the reference does not crash)."""
    rng = np.random.RandomState(seed)
    steps = rng.randint(1, 4, size=4000)
    steps[0] = 0
    counts = np.cumsum(steps)
    return counts / float(counts[-1] + rng.randint(0, 100))


# scipy.interpolate.interp1d(far, VAL_THRESHOLDS, kind='slinear')(target), as run by
# scipy 1.17.1 / numpy 2.4 on scipy_test_curve(seed); target = 1e-3 or far[index].
SCIPY_SLINEAR = [
    (0, None, '0x1.1d6e5e3ad724dp-8'),
    (1, None, '0x1.8ba40d90e23b0p-8'),
    (2, None, '0x1.e5d7183894546p-9'),
    (3, None, '0x1.8b47c73eee527p-8'),
    (4, None, '0x1.0b84988094e5ep-8'),
    (5, None, '0x1.950331e3a7daap-9'),
    (1, 68, '0x1.16872b020c49bp-4'),
    (3, 12, '0x1.89374bc6a7ef9p-7'),
    (4, 62, '0x1.fbe76c8b43957p-5'),
    (2, 1236, '0x1.3c6a7ef9db22dp+0'),
    (0, 3999, '0x1.ffdf3b645a1cbp+1'),
]


def test_threshold_at_far_equals_scipy_interp1d_without_repeats():
    np_interp_differs = 0
    for seed, index, expected_hex in SCIPY_SLINEAR:
        far = scipy_test_curve(seed)
        target = 1e-3 if index is None else far[index]
        expected = float.fromhex(expected_hex)
        got = verification.threshold_at_far(far, verification.VAL_THRESHOLDS, target)
        assert got == expected, (seed, index, got.hex(), expected_hex)
        np_interp_differs += np.interp(target, far, verification.VAL_THRESHOLDS) != expected
    assert np_interp_differs >= 3  # the cases do tell the two formulas apart


def test_fold_with_only_one_kind_gives_zero_not_nan():
    # Two folds: the first trains on different pairs only, the second on same only.
    embeddings, issame = sorted_labels(6, 6, 10)
    with np.errstate(all='raise'), warnings.catch_warnings():
        warnings.simplefilter('error')
        tpr, fpr, accuracy, val, val_std, far = verification.evaluate(embeddings, issame, 2)
    for value in (tpr, fpr, accuracy, val, val_std, far):
        assert np.all(np.isfinite(value))
    # Fold 1 trains without different pairs: FAR never reaches the target, the
    # threshold is 0.0 and nothing is accepted on the test fold.
    assert verification.calculate_val_far(0.0, [0.1, 0.2], [True, False]) == (0.0, 0.0)
    assert verification.calculate_val_far(1.0, [0.1, 0.2], [False, False]) == (0.0, 1.0)
    assert verification.calculate_val_far(1.0, [0.1, 0.2], [True, True]) == (1.0, 0.0)


def test_fold_indices_matches_kfold():
    for nrof_pairs, nrof_folds in [(23, 10), (20, 10), (5, 5), (9, 1), (9, 2)]:
        got = verification.fold_indices(nrof_pairs, nrof_folds)
        want = ref_kfold(nrof_pairs, nrof_folds)
        assert [(list(a), list(b)) for a, b in got] == want


@pytest.mark.parametrize('embeddings,issame,nrof_folds,message', [
    (np.zeros(8), [True] * 4, 2, r'shape \(8,\); expected 2-D'),
    (np.zeros((4, 2, 2)), [True] * 2, 2, r'shape \(4, 2, 2\); expected 2-D'),
    (np.zeros((7, 3)), [True] * 3, 2, r'7 rows; expected an even number'),
    (np.zeros((8, 3)), [True] * 5, 2, r'shape \(5,\); expected one entry per pair, \(4,\)'),
    (np.zeros((8, 3)), [[True] * 4], 2, r'shape \(1, 4\); expected one entry per pair'),
    (np.zeros((8, 3)), [True] * 4, 0, r'nrof_folds=0: expected .* \(4\)'),
    (np.zeros((8, 3)), [True] * 4, 5, r'nrof_folds=5: expected .* \(4\)'),
    (np.zeros((8, 3)), [True] * 4, 2.0, r'nrof_folds=2.0: expected an int'),
    (np.zeros((0, 3)), [], 1, r'nrof_folds=1: expected .* \(0\)'),
])
def test_evaluate_rejects_bad_input(embeddings, issame, nrof_folds, message):
    with pytest.raises(ValueError, match=message):
        verification.evaluate(embeddings, issame, nrof_folds)


def test_helpers_reject_bad_input():
    with pytest.raises(ValueError, match='non-decreasing'):
        verification.threshold_at_far([0.0, 0.5, 0.2], [0.0, 1.0, 2.0], 0.1)
    with pytest.raises(ValueError, match=r'far \(2,\) and thresholds \(3,\)'):
        verification.threshold_at_far([0.0, 0.5], [0.0, 1.0, 2.0], 0.1)
    with pytest.raises(ValueError, match=r'dist \(3,\) and actual_issame \(2,\)'):
        verification.calculate_accuracy(0.5, [0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match=r'flipped_embeddings \(4, 3\)'):
        verification.evaluate_flip(np.zeros((4, 2)), np.zeros((4, 3)), [True] * 2)


# ---------------------------------------------------------------------------
# evaluate_flip.
# ---------------------------------------------------------------------------
def unit_pairs(distances):
    """Unit 2-D pairs ((1, 0), (cos a, sin a)) with the given squared distances."""
    cos = 1.0 - np.asarray(distances) / 2.0
    second = np.stack([cos, np.sqrt(1.0 - cos ** 2)], 1)
    return interleave(np.tile([1.0, 0.0], (len(cos), 1)), second)


def test_evaluate_flip_known_answer():
    unit = unit_pairs([0.505, 1.505, 0.555, 1.555])
    issame = [True, False, True, False]
    result = verification.evaluate_flip(3.0 * unit.astype(np.float32),
                                        5.0 * unit.astype(np.float32), issame, nrof_folds=2)
    np.testing.assert_allclose(result.xnorm, 4.0, rtol=1e-6)
    # Fold 0 trains on pairs 2, 3 -> 0.56 and scores 1.0; fold 1 trains on pairs
    # 0, 1 -> 0.51 and rejects pair 2 (0.555): 0.5. On all pairs, 0.56 is best.
    np.testing.assert_array_equal(result.fold_thresholds, [0.56, 0.51])
    assert (result.accuracy, result.accuracy_std) == (0.75, 0.25)
    assert result.threshold == verification.ACCURACY_THRESHOLDS[56]
    assert result.nrof_pairs == 4
    assert result.tpr.shape == result.fpr.shape == verification.ACCURACY_THRESHOLDS.shape


def test_evaluate_flip_sums_before_normalising():
    rng = np.random.RandomState(12)
    embeddings, issame = clustered_pairs(60, 8, 1.0, 13)
    scale = rng.uniform(0.1, 10.0, (120, 1))
    raw = (embeddings * scale).astype(np.float32)
    flipped = (normalized(embeddings + 0.5 * rng.randn(120, 8)) / scale).astype(np.float32)
    result = verification.evaluate_flip(raw, flipped, issame)

    summed = raw.astype(np.float64) + flipped
    tpr, fpr, accuracy, val, val_std, far = verification.evaluate(normalized(summed), issame)
    np.testing.assert_array_equal(result.tpr, tpr)
    assert (result.accuracy, result.accuracy_std) == (np.mean(accuracy), np.std(accuracy))
    assert (result.val, result.val_std, result.far) == (val, val_std, far)
    norms = np.linalg.norm(np.concatenate([raw, flipped]).astype(np.float64), axis=1)
    np.testing.assert_allclose(result.xnorm, np.mean(norms), rtol=1e-12)

    normalised_first = normalized(raw.astype(np.float64)) + normalized(flipped.astype(np.float64))
    other = verification.evaluate(normalized(normalised_first), issame)[0]
    assert not np.array_equal(result.tpr, other)


# ---------------------------------------------------------------------------
# Session runner, on a tiny real graph.
# ---------------------------------------------------------------------------
TOP_LEFT_B = 0 * 12 + 0 * 3 + 0  # flat index of pixel (row 0, col 0), channel 0 of 4x4x3
TOP_RIGHT_B = 0 * 12 + 3 * 3 + 0  # pixel (row 0, col 3), channel 0


def tiny_graph(batch_size):
    """uint8 [batch, 4, 4, 3] -> [top-left B, top-right B] * scale (fed, default 1)."""
    images = tf.placeholder(tf.uint8, [batch_size, 4, 4, 3], name='images')
    scale = tf.placeholder_with_default(1.0, [], name='scale')
    weights = np.zeros((48, 2), np.float32)
    weights[TOP_LEFT_B, 0] = weights[TOP_RIGHT_B, 1] = 1.0
    flat = tf.reshape(tf.cast(images, tf.float32), [batch_size, 48])
    return images, scale, tf.matmul(flat, tf.constant(weights)) * scale


def marked_images(nrof_images, seed):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, (nrof_images, 4, 4, 3)).astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(nrof_images)
    images[:, 0, 3, 0] = 100 + np.arange(nrof_images)
    return images


class RecordingSession(object):
    """Forwards run() to a real session and records the fed image batches."""

    def __init__(self, sess, images_placeholder):
        self.sess, self.images_placeholder, self.batches = sess, images_placeholder, []

    def run(self, fetches, feed_dict):
        self.batches.append(np.array(feed_dict[self.images_placeholder]))
        return self.sess.run(fetches, feed_dict=feed_dict)


@pytest.mark.parametrize('nrof_images,batch_size', [(7, 3), (6, 3), (2, 5), (1, 1)])
def test_embed_images_window_trick_and_flip(nrof_images, batch_size):
    images = marked_images(nrof_images, seed=nrof_images)
    before = images.copy()
    with tf.Graph().as_default(), tf.Session() as sess:
        placeholder, scale, embedding = tiny_graph(batch_size)
        recorder = RecordingSession(sess, placeholder)
        extra_feed = {scale: 2.0}
        embeddings, flipped = verification.embed_images(recorder, placeholder, embedding, images,
                                                        batch_size, extra_feed=extra_feed)
    index = np.arange(nrof_images, dtype=np.float32)
    np.testing.assert_array_equal(embeddings, 2.0 * np.stack([index, 100 + index], 1))
    np.testing.assert_array_equal(flipped, 2.0 * np.stack([100 + index, index], 1))
    assert embeddings.dtype == flipped.dtype == np.float32
    nrof_batches = -(-nrof_images // batch_size)
    assert len(recorder.batches) == 2 * nrof_batches
    assert all(batch.shape == (batch_size, 4, 4, 3) for batch in recorder.batches)
    np.testing.assert_array_equal(recorder.batches[nrof_batches - 1][-1], images[-1])
    np.testing.assert_array_equal(recorder.batches[-1][-1], images[-1, :, ::-1, :])
    np.testing.assert_array_equal(images, before)
    assert extra_feed == {scale: 2.0}


def test_repeated_images_are_embedded_once():
    """An image's embedding does not depend on its batch neighbours (checked bit for bit
    on orl_val.bin with TF 2.21 and 1.15, where embedding it once made validation 14
    times faster), so a repeated image is embedded once."""
    distinct = marked_images(4, seed=3)
    order = [0, 1, 0, 2, 3, 1, 0]
    images = distinct[order]
    rows, inverse = eval_data_reader.distinct_images(images)
    assert list(rows) == [0, 1, 3, 4] and list(inverse) == [0, 1, 0, 2, 3, 1, 0]
    with tf.Graph().as_default(), tf.Session() as sess:
        placeholder, _, embedding = tiny_graph(3)
        recorder = RecordingSession(sess, placeholder)
        embeddings, flipped = verification.embed_images(recorder, placeholder, embedding,
                                                        images, 3)
    index = np.array(order, np.float32)
    np.testing.assert_array_equal(embeddings, np.stack([index, 100 + index], 1))
    np.testing.assert_array_equal(flipped, np.stack([100 + index, index], 1))
    # 4 distinct images in batches of 3: 2 batches per pass, not the 3 of 7 rows.
    assert len(recorder.batches) == 4
    fed = np.concatenate(recorder.batches[:2])[:, 0, 0, 0]
    assert sorted(set(fed.tolist())) == [0, 1, 2, 3]


def test_embed_images_rejects_bad_input():
    with tf.Graph().as_default(), tf.Session() as sess:
        placeholder, _, embedding = tiny_graph(4)
        images = marked_images(5, seed=0)
        with pytest.raises(ValueError, match='static batch dimension 4; expected batch_size=3'):
            verification.embed_images(sess, placeholder, embedding, images, 3)
        with pytest.raises(ValueError, match='dtype float32; expected raw uint8'):
            verification.embed_images(sess, placeholder, embedding, images.astype(np.float32), 4)
        with pytest.raises(ValueError, match=r'shape \(5, 4, 4\); expected \[N >= 1, H, W, 3\]'):
            verification.embed_images(sess, placeholder, embedding, images[..., 0], 4)
        with pytest.raises(ValueError, match='batch_size=0: expected a positive int'):
            verification.embed_images(sess, placeholder, embedding, images, 0)


def test_run_verification_end_to_end():
    # Embedding = (B, G) of the top-left pixel, mirrored by the flip to the
    # top-right one; images are left-right symmetric so both passes agree.
    rng = np.random.RandomState(14)
    nrof_pairs = 12
    issame = np.arange(nrof_pairs) % 2 == 0
    colors = rng.randint(0, 256, (nrof_pairs, 2))
    second = np.where(issame[:, None], colors, (colors + 128) % 256)
    images = np.zeros((2 * nrof_pairs, 4, 4, 3), np.uint8)
    images[0::2, 0, 0, :2] = images[0::2, 0, 3, :2] = colors
    images[1::2, 0, 0, :2] = images[1::2, 0, 3, :2] = second
    with tf.Graph().as_default(), tf.Session() as sess:
        placeholder = tf.placeholder(tf.uint8, [5, 4, 4, 3])
        embedding = tf.cast(placeholder[:, 0, 0, :2], tf.float32) + 1.0
        result = verification.run_verification(sess, placeholder, embedding, images, issame,
                                               batch_size=5, nrof_folds=3)
    expected = (np.concatenate([colors, second], 1).reshape(-1, 2) + 1).astype(np.float32)
    assert result.accuracy == 1.0
    want = verification.evaluate_flip(expected, expected, issame, 3)
    for field, got_value, want_value in zip(result._fields, result, want):
        np.testing.assert_array_equal(got_value, want_value, err_msg=field)
