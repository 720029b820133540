"""Tests for pair_errors.py: groups of images linked by same pairs, errors counted by group."""
import numpy as np
import pytest

from data import eval_data_reader
from evaluation import pair_errors
import verification

DIM = 8


def _image(value):
    return np.full((4, 4, 3), value, np.uint8)


@pytest.fixture
def two_session_set():
    """Identity A in two far-apart sessions (a1, a2), identities B and C compact.

    Returns (images, embeddings, flipped, issame, cross_pairs): pairs are rows
    2k, 2k+1; `cross_pairs` counts A's same pairs across its two sessions.
    """
    rng = np.random.RandomState(0)
    centre = {'a1': 0, 'a2': 1, 'b': 2, 'c': 3}  # one axis each: sessions are orthogonal
    people = {'a1': [10, 11, 12], 'a2': [20, 21], 'b': [30, 31, 32], 'c': [40, 41]}
    identity = {'a1': 'a', 'a2': 'a', 'b': 'b', 'c': 'c'}
    images = [(group, value) for group, values in sorted(people.items()) for value in values]
    pairs = []
    for i, first in enumerate(images):
        for second in images[i + 1:]:
            pairs.append((first, second, identity[first[0]] == identity[second[0]]))
    rows, issame = [], []
    for first, second, same in pairs:
        rows.extend([first, second])
        issame.append(same)

    def embed(row):
        vector = np.zeros(DIM)
        vector[centre[row[0]]] = 1.0
        return vector + 0.01 * rng.randn(DIM)

    embeddings = np.array([embed(row) for row in rows], np.float32)
    flipped = np.array([embed(row) for row in rows], np.float32)
    cross = sum(1 for first, second, _ in pairs if {first[0], second[0]} == {'a1', 'a2'})
    return (np.stack([_image(value) for _, value in rows]), embeddings, flipped,
            np.array(issame), cross)


def test_groups_join_sessions_through_same_pairs(two_session_set):
    images, _, _, issame, _ = two_session_set
    keys = eval_data_reader.distinct_images(images)[1]
    labels, first_image = pair_errors.groups(keys, issame)
    assert len(first_image) == 3
    values = images[:, 0, 0, 0]
    # Rows of A (10s and 20s, never paired with each other's session by pixels) share one
    # label; B (30s) and C (40s) have their own.
    assert [len(set(labels[values // 10 == tens])) for tens in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert len(set(labels[values < 30])) == 1 and len(set(labels)) == 3
    assert np.all(labels[first_image] == np.arange(3))


def test_cross_session_pairs_are_the_false_rejects_and_set_the_ceiling(two_session_set):
    images, embeddings, flipped, issame, cross = two_session_set
    report = pair_errors.breakdown(embeddings, flipped, issame, 1.0,
                                   eval_data_reader.distinct_images(images)[1])
    assert cross == 6 and report.errors == cross and not report.false_accepts
    (identity, count), = report.false_rejects.items()
    assert count == cross and report.same_pairs[identity] == 3 + 1 + cross  # C(3,2)+C(2,2)+3*2
    assert list(report.group_sizes) == [5, 3, 2]
    assert pair_errors.ceiling(report) == (identity, 1.0 - cross / float(len(issame)))
    lines = pair_errors.format_report('toy', report)
    assert lines[0] == ('[toy] errors at threshold 1.00: 6 of %d pairs (6 false rejects, '
                        '0 false accepts); 3 groups of images linked by same-person pairs '
                        '(the .bin holds no identity labels)' % len(issame))
    assert lines[1] == ('[toy]   false rejects: group of image 0 (5 images): '
                        '6 of its 10 same pairs')
    assert 'accuracy is at most %.5f' % (1.0 - 6.0 / len(issame)) in lines[-1]
    # The same distances as the protocol: at this threshold its accuracy on all pairs agrees.
    summed = embeddings.astype(np.float64) + flipped
    combined = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    dist = verification.distance(combined[0::2], combined[1::2])
    _, _, accuracy = verification.calculate_accuracy(1.0, dist, issame)
    assert accuracy == pytest.approx(1.0 - report.errors / float(len(issame)))


def test_a_threshold_that_accepts_everything_gives_false_accepts_by_identity_pair(
        two_session_set):
    images, embeddings, flipped, issame, _ = two_session_set
    report = pair_errors.breakdown(embeddings, flipped, issame, 4.1,
                                   eval_data_reader.distinct_images(images)[1])
    assert not report.false_rejects and report.errors == int(np.sum(~issame))
    assert report.false_accepts == report.different_pairs
    assert sorted(report.different_pairs) == [(0, 1), (0, 2), (1, 2)]
    assert pair_errors.ceiling(report) == (None, 1.0)
    lines = pair_errors.format_report('toy', report)
    assert len(lines) == 4 and all('false accepts: groups of images ' in line
                                   for line in lines[1:])
    assert lines[1].endswith(': 15 of their 15 different pairs')  # A (5 images) with B (3)


def test_repeated_images_are_one_image():
    images = np.stack([_image(1), _image(2), _image(1), _image(3)])
    keys = eval_data_reader.distinct_images(images)[1]
    assert keys[0] == keys[2] and len(set(keys)) == 3
    labels, _ = pair_errors.groups(keys, [True, False])
    # Image 1 is in both pairs: the repeat carries its identity into the second pair.
    assert labels[0] == labels[1] == labels[2] and labels[3] != labels[0]


def test_without_repeated_images_the_report_names_the_wrong_pairs():
    """As on the demo's .bin: every image in one pair only, so each group is one pair and
    counts by group would say nothing; the wrong pairs farthest from the threshold instead."""
    rng = np.random.RandomState(1)
    nrof_pairs = 10
    images = np.stack([_image(value) for value in range(2 * nrof_pairs)])
    issame = np.array([k % 2 == 0 for k in range(nrof_pairs)])
    axes = np.eye(DIM)
    embeddings = np.zeros((2 * nrof_pairs, DIM))
    for k in range(nrof_pairs):
        embeddings[2 * k] = axes[k % DIM]
        embeddings[2 * k + 1] = axes[k % DIM] if issame[k] else axes[(k + 1) % DIM]
    embeddings[2 * 2 + 1] = axes[5]       # pair 2: same person, orthogonal (distance 2)
    embeddings[2 * 4 + 1] = -axes[4]      # pair 4: same person, opposite (distance 4)
    embeddings[2 * 3 + 1] = axes[3]       # pair 3: different people, identical (distance 0)
    embeddings = (embeddings + 1e-3 * rng.randn(*embeddings.shape)).astype(np.float32)
    report = pair_errors.breakdown(embeddings, embeddings, issame, 1.0,
                                   eval_data_reader.distinct_images(images)[1])
    assert report.errors == 3 and len(report.first_image) == 15  # 5 same pairs, 10 singles
    lines = pair_errors.format_report('demo', report)
    assert lines[0].endswith('; 15 groups of images linked by same-person pairs (the .bin '
                             'holds no identity labels)')
    assert lines[1] == ('[demo]   no group is in more than one pair, so the groups add '
                        'nothing to the pairs; the wrong pairs, farthest from the threshold '
                        'first:')
    assert [line.split(':')[0] for line in lines[2:]] == [
        '[demo]   false reject', '[demo]   false reject', '[demo]   false accept']
    assert lines[2].startswith('[demo]   false reject: pair 4 (rows 8, 9), distance 4.00')
    assert lines[3].startswith('[demo]   false reject: pair 2 (rows 4, 5), distance 2.00')
    assert lines[4].startswith('[demo]   false accept: pair 3 (rows 6, 7), distance 0.00')
