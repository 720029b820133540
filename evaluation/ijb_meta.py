"""The meta files of insightface's IJB-B / IJB-C release, read and cross-checked.

The release insightface's `recognition/arcface_torch/eval_ijbc.py` reads is a folder
with the face crops in `loose_crop/` and three text files per target (IJBB or IJBC,
lower-cased in the names) in `meta/`, fields separated by spaces:

    <target>_face_tid_mid.txt         image_name template_id media_id
    <target>_name_5pts_score.txt      image_name x1 y1 ... x5 y5 detector_score
    <target>_template_pair_label.txt  template_id_1 template_id_2 label (1 same, 0 not)

The reference never joins the first two files by name: it takes the templates and
media of the tid_mid file's rows and the features of the 5pts file's rows as the same
images, row by row. Here that assumption is checked (names equal line by line) and a
release that breaks it is refused, as is every other defect the reference would turn
into a crash far away or a silently wrong number. Blank lines are skipped, as pandas
(the reference's reader of the tid_mid and pair files) skips them.

IJB-C has 469,375 images and 15,658,489 pairs. The two image files are read line by
line; the pair file in blocks of whole lines, counting each line's fields and parsing
the numbers with numpy, so that only int64 arrays stay in memory (~380 MB for IJB-C;
read in ~5 s).

Typical use:
    meta = read_meta('/data/IJB_release/IJBC', 'IJBC')
    image = ijb_align.read_image(image_file('/data/IJB_release/IJBC', meta.image_names[0]))
"""
import array
import collections
import math
import os
import re
import warnings

import numpy as np

TARGETS = ('IJBB', 'IJBC')
META_DIR = 'meta'
IMAGE_DIR = 'loose_crop'
TEMPLATE_MEDIA = 'face_tid_mid'
LANDMARKS = 'name_5pts_score'
PAIRS = 'template_pair_label'

TEMPLATE_MEDIA_FIELDS = 'image_name template_id media_id'
LANDMARK_FIELDS = 'image_name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 detector_score'
PAIR_FIELDS = 'template_id_1 template_id_2 label'
# Bytes of the pair file parsed at once: bounds the temporaries (a few bytes of
# flags and offsets per byte of text) whatever the file's size.
BLOCK_BYTES = 1 << 22
_INTEGER = re.compile(br'[+-]?[0-9]+')

IJBMeta = collections.namedtuple('IJBMeta', [
    'image_names',      # list of N str, in the order of the 5pts file
    'landmarks',        # float32 [N, 5, 2], (x, y) in loose_crop pixels
    'detector_scores',  # float32 [N]
    'templates',        # int64 [N], template of each image
    'medias',           # int64 [N], media (photo or video) of each image
    't1',               # int64 [P], first template of each pair
    't2',               # int64 [P], second template of each pair
    'labels',           # int64 [P], 1 same person, 0 different
    'image_lines',      # int64 [N], line of each image in the 5pts file (for messages)
])


class IJBFormatError(ValueError):
    """A release that does not read as insightface's IJB layout; one line naming the
    file, the line and what was expected."""


def _fail(path, line, problem):
    raise IJBFormatError('%s:%d: %s' % (path, line, problem))


def meta_path(ijb_root, target, which):
    """<ijb_root>/meta/<target>_<which>.txt, e.g. which=TEMPLATE_MEDIA."""
    if target not in TARGETS:
        raise ValueError('unknown IJB target %r; expected one of %s'
                         % (target, ', '.join(TARGETS)))
    return os.path.join(ijb_root, META_DIR, '%s_%s.txt' % (target.lower(), which))


def image_file(ijb_root, image_name):
    """Where an image of the release is: <ijb_root>/loose_crop/<image_name>."""
    return os.path.join(ijb_root, IMAGE_DIR, image_name)


def read_meta(ijb_root, target):
    """Reads and checks one target's meta files and that every image file exists.

    Args:
      ijb_root: folder holding meta/ and loose_crop/ (the reference's --image-path).
      target: 'IJBB' or 'IJBC'.
    Returns:
      IJBMeta, images in the order of the 5pts file (the order the reference embeds
      them in), pairs in file order.
    Raises:
      ValueError: an unknown target.
      IJBFormatError: a missing meta or image file, a line with the wrong number of
        fields, a non-number, a label other than 0/1, the two image files listing
        different images, or a pair naming a template no image belongs to.
    """
    paths = [meta_path(ijb_root, target, which)
             for which in (TEMPLATE_MEDIA, LANDMARKS, PAIRS)]
    for path in paths:
        if not os.path.isfile(path):
            raise IJBFormatError('%s meta file %s not found: looked for %s'
                                 % (target, os.path.basename(path), path))
    media_path, landmark_path, pair_path = paths
    media_rows = _read_template_media(media_path)
    landmark_rows = _read_landmarks(landmark_path)
    _check_same_images(media_path, media_rows[:2], landmark_path, landmark_rows[:2])
    names, lines, landmarks, scores = landmark_rows
    _check_image_files(ijb_root, names, lines, landmark_path)
    templates, medias = media_rows[2], media_rows[3]
    t1, t2, labels = _read_pairs(pair_path, np.unique(templates), media_path)
    return IJBMeta(image_names=names, landmarks=landmarks, detector_scores=scores,
                   templates=templates, medias=medias, t1=t1, t2=t2, labels=labels,
                   image_lines=np.array(lines, np.int64))


def check_scorable(meta, ijb_root, target):
    """Raises IJBFormatError unless the pairs hold genuine and impostor pairs both."""
    genuine = int(meta.labels.sum())
    if genuine in (0, meta.labels.size):
        raise IJBFormatError('%s: %d genuine and %d impostor pairs; TAR at FAR needs both'
                             % (meta_path(ijb_root, target, PAIRS), genuine,
                                meta.labels.size - genuine))


def _split_lines(path, width, layout):
    """Yields (line number, fields as bytes) of every non-blank line, `width` fields."""
    with open(path, 'rb') as source:
        for number, line in enumerate(source, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != width:
                _fail(path, number, 'found %d fields, expected %d (%s)'
                      % (len(fields), width, layout))
            yield number, fields


def _name(path, number, field):
    try:
        return field.decode('utf-8')
    except UnicodeDecodeError:
        _fail(path, number, 'image name %r is not UTF-8' % field)


def _integer(path, number, field, what, layout):
    if not _INTEGER.fullmatch(field):
        _fail(path, number, '%s %r is not an integer (%s)'
              % (what, field.decode('utf-8', 'replace'), layout))
    value = int(field)
    if not -2 ** 63 <= value < 2 ** 63:
        _fail(path, number, '%s %d does not fit in int64 (%s)' % (what, value, layout))
    return value


def _read_template_media(path):
    """(names, line numbers, templates int64, medias int64) of the tid_mid file."""
    names, lines, templates, medias = [], [], array.array('q'), array.array('q')
    for number, fields in _split_lines(path, 3, TEMPLATE_MEDIA_FIELDS):
        names.append(_name(path, number, fields[0]))
        lines.append(number)
        templates.append(_integer(path, number, fields[1], 'template_id',
                                  TEMPLATE_MEDIA_FIELDS))
        medias.append(_integer(path, number, fields[2], 'media_id', TEMPLATE_MEDIA_FIELDS))
    return (names, lines, np.frombuffer(templates, np.int64).copy(),
            np.frombuffer(medias, np.int64).copy())


def _read_landmarks(path):
    """(names, line numbers, landmarks float32 [N,5,2], scores float32 [N]) of the
    5pts file. Values are parsed as float64, then rounded to float32, as the
    reference does for landmarks."""
    names, lines, values = [], [], array.array('d')
    for number, fields in _split_lines(path, 12, LANDMARK_FIELDS):
        names.append(_name(path, number, fields[0]))
        lines.append(number)
        for field in fields[1:]:
            try:
                value = float(field)
            except ValueError:
                value = float('nan')
            if not math.isfinite(value):
                _fail(path, number, '%r is not a finite number (%s)'
                      % (field.decode('utf-8', 'replace'), LANDMARK_FIELDS))
            values.append(value)
    values = np.frombuffer(values, np.float64).reshape(-1, 11)
    return (names, lines, values[:, :10].astype(np.float32).reshape(-1, 5, 2),
            values[:, 10].astype(np.float32))


def _check_same_images(media_path, media_rows, landmark_path, landmark_rows):
    """The reference pairs the two files row by row: same images, same order."""
    media_names, media_lines = media_rows
    names, lines = landmark_rows
    if names == media_names:
        return
    common = min(len(names), len(media_names))
    k = next((k for k in range(common) if names[k] != media_names[k]), common)
    if k == len(names):
        _fail(media_path, media_lines[k], 'image %r has no row in %s (it ends after %d '
              'images); both files must list the same images in the same order'
              % (media_names[k], landmark_path, k))
    if names[k] not in set(media_names):
        _fail(landmark_path, lines[k], 'image %r is not in %s' % (names[k], media_path))
    there = ('ends after %d images' % k if k == len(media_names)
             else 'has %r at line %d' % (media_names[k], media_lines[k]))
    _fail(landmark_path, lines[k], 'image %r is row %d here but %s %s; both files must '
          'list the same images in the same order' % (names[k], k + 1, media_path, there))


def _check_image_files(ijb_root, names, lines, landmark_path):
    folder = os.path.join(ijb_root, IMAGE_DIR)
    if names and not os.path.isdir(folder):
        _fail(landmark_path, lines[0], 'image folder %s not found' % folder)
    for name, number in zip(names, lines):
        path = image_file(ijb_root, name)
        if not os.path.isfile(path):
            _fail(landmark_path, number, 'image file %s not found' % path)


def _read_pairs(path, known_templates, media_path):
    """(t1, t2, labels) int64 [P] of the pair file, checked block by block: labels
    0/1, both templates among `known_templates`. The three are rows of one array sized
    by a first pass that counts the lines, so nothing is copied at the end."""
    with open(path, 'rb') as source:
        capacity = 1 + sum(block.count(b'\n')
                           for block in iter(lambda: source.read(BLOCK_BYTES), b''))
    columns = np.empty((3, capacity), np.int64)
    size = 0
    for lines, values in _integer_blocks(path, 3, PAIR_FIELDS):
        bad = np.flatnonzero((values[:, 2] != 0) & (values[:, 2] != 1))
        if bad.size:
            _fail(path, lines[bad[0]], 'label %d, expected 0 or 1 (%s)'
                  % (values[bad[0], 2], PAIR_FIELDS))
        for column in (0, 1):
            ids = values[:, column]
            bad = np.flatnonzero(~np.isin(ids, known_templates))
            if bad.size:
                _fail(path, lines[bad[0]], 'template %d is not in %s (no image has it)'
                      % (ids[bad[0]], media_path))
        columns[:, size:size + len(values)] = values.T
        size += len(values)
    return columns[0, :size], columns[1, :size], columns[2, :size]


def _integer_blocks(path, width, layout):
    """Yields (line numbers int64 [k], values int64 [k, width]) per block of whole
    lines of a file of integers."""
    first_line = 1
    pending = b''
    with open(path, 'rb') as source:
        while True:
            block = source.read(BLOCK_BYTES)
            text = pending + block
            if block:
                cut = text.rfind(b'\n') + 1
                text, pending = text[:cut], text[cut:]
                if not text:
                    continue
            if text:
                yield _parse_integer_lines(path, text, first_line, width, layout)
                first_line += text.count(b'\n')
            if not block:
                return


def _parse_integer_lines(path, text, first_line, width, layout):
    """One block: every non-blank line must hold `width` integers."""
    codes = np.frombuffer(text, np.uint8)
    newline = codes == ord('\n')
    blank = newline | (codes == ord(' ')) | (codes == ord('\t')) | (codes == ord('\r'))
    blank |= (codes == 11) | (codes == 12)  # \v and \f: whitespace to bytes.split too
    word_start = ~blank
    word_start[1:] &= blank[:-1]
    starts = np.flatnonzero(word_start)
    ends = np.flatnonzero(newline)
    if not text.endswith(b'\n'):
        ends = np.append(ends, len(text))
    counts = np.bincount(np.searchsorted(ends, starts), minlength=ends.size)
    wrong = np.flatnonzero((counts != width) & (counts != 0))
    if wrong.size:
        _fail(path, first_line + wrong[0], 'found %d fields, expected %d (%s)'
              % (counts[wrong[0]], width, layout))
    lines = first_line + np.flatnonzero(counts == width)
    if not starts.size:  # numpy parses a text of blanks alone as one 0
        return lines, np.zeros((0, width), np.int64)
    try:
        with warnings.catch_warnings():
            # numpy < 2 warns and returns what it parsed up to a non-number; 2.x raises.
            warnings.simplefilter('error', DeprecationWarning)
            values = np.fromstring(text, np.int64, sep=' ')
    except (ValueError, DeprecationWarning):
        values = None
    if values is None or values.size != starts.size:
        for offset, line in enumerate(text.split(b'\n')):
            for field in line.split():
                _integer(path, first_line + offset, field, 'field', layout)
        _fail(path, first_line, 'numpy could not parse the integers of lines %d-%d (%s)'
              % (first_line, first_line + ends.size - 1, layout))
    return lines, values.reshape(-1, width)
