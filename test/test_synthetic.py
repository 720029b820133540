"""Tests for data/synthetic/ and data/make_synthetic_dataset.py (tiny sizes)."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data import eval_data_reader, image_ops, make_synthetic_dataset, recordio, recordio_reader
from data.synthetic import identities, insightface_files, render

SIZE = (32, 32)
TINY = dict(num_identities=6, images_per_identity=4, num_val_identities=5, num_val_pairs=20,
            image_size=SIZE, seed=3)
FILES = ('train.rec', 'train.idx', 'property', 'lfw.bin', 'synthetic.json')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny dataset folder (32x32, 6 identities x 4 images, 20 pairs)."""
    folder = str(tmp_path_factory.mktemp('synthetic') / 'tiny')
    make_synthetic_dataset.make_dataset(folder, **TINY)
    return folder


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _decode_all(payloads):
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        image = image_ops.decode_image(encoded)
        with tf.Session() as session:
            return np.stack([session.run(image, {encoded: p}) for p in payloads])


def test_same_seed_same_bytes_whatever_the_worker_count(tiny, tmp_path):
    again = str(tmp_path / 'again')
    make_synthetic_dataset.make_dataset(again, num_workers=2, **TINY)
    for name in FILES:
        assert _read(os.path.join(tiny, name)) == _read(os.path.join(again, name)), name


def test_different_seed_different_bytes(tiny, tmp_path):
    other = str(tmp_path / 'other')
    make_synthetic_dataset.make_dataset(other, **dict(TINY, seed=4))
    assert _read(os.path.join(tiny, 'train.rec')) != _read(os.path.join(other, 'train.rec'))
    assert _read(os.path.join(tiny, 'lfw.bin')) != _read(os.path.join(other, 'lfw.bin'))


def test_rec_has_insightface_layout(tiny):
    n_ids, per_id = TINY['num_identities'], TINY['images_per_identity']
    num_images = n_ids * per_id
    with recordio_reader.IndexedRecordReader(os.path.join(tiny, 'train.rec'),
                                             os.path.join(tiny, 'train.idx')) as reader:
        header, _ = recordio.unpack(reader.read(0))
        assert header.flag == 2
        assert list(header.label) == [num_images + 1, num_images + 1 + n_ids]
        assert reader.image_keys.tolist() == list(range(1, num_images + 1))
        assert list(reader.identity_keys) == list(range(num_images + 1, num_images + 1 + n_ids))
        payloads = []
        for record in reader.iter_images():
            image_header, payload = recordio.unpack(record.data)
            assert image_header.flag == 0
            assert image_header.label == (record.key - 1) // per_id
            assert image_header.id == record.key
            payloads.append(payload)
        for identity, key in enumerate(reader.identity_keys):
            id_header, payload = recordio.unpack(reader.read(key))
            assert list(id_header.label) == [1 + identity * per_id, 1 + (identity + 1) * per_id]
            assert payload == b''
    assert _read(os.path.join(tiny, 'property')).decode().strip() == '6,32,32'
    images = _decode_all(payloads)
    assert images.shape == (num_images,) + SIZE + (3,)


def test_images_decode_to_bgr(tiny):
    """decode_image of a stored JPEG gives back the rendered BGR image."""
    with recordio_reader.IndexedRecordReader(os.path.join(tiny, 'train.rec'),
                                             os.path.join(tiny, 'train.idx')) as reader:
        payload = recordio.unpack(reader.read(1))[1]
    decoded = _decode_all([payload])[0].astype(np.float32)
    rendered = render.render_images(TINY['seed'], identities.TRAIN_STREAM,
                                    [(0, 0)], SIZE)[0].astype(np.float32)
    error = np.abs(decoded - rendered).mean()
    swapped = np.abs(decoded - rendered[:, :, ::-1]).mean()
    assert error < 6.0, 'JPEG round trip error %.2f' % error
    assert error < swapped


def test_bin_is_lfw_style_from_held_out_identities(tiny):
    path = os.path.join(tiny, 'lfw.bin')
    assert _read(path)[:2] == b'\x80\x02'  # pickle protocol 2
    with open(path, 'rb') as f:
        bins, issame = pickle.load(f, encoding='bytes')
    pairs = TINY['num_val_pairs']
    assert len(bins) == 2 * pairs and all(isinstance(b, bytes) for b in bins)
    assert all(isinstance(s, bool) for s in issame)
    per_fold = pairs // insightface_files.NUM_FOLDS
    for fold in range(insightface_files.NUM_FOLDS):
        part = issame[fold * per_fold:(fold + 1) * per_fold]
        assert part == [True] * (per_fold // 2) + [False] * (per_fold // 2)
    with open(os.path.join(tiny, 'synthetic.json')) as f:
        plan = json.load(f)['val_sets']['lfw']['pair_identities']
    assert [a == b for a, b in plan] == issame
    images, loaded_issame = eval_data_reader.load_bin(path, SIZE)
    assert images.shape == (2 * pairs,) + SIZE + (3,) and images.dtype == np.uint8
    assert list(loaded_issame) == issame
    # Held out: the verification identities come from another seed stream, so
    # none of them is a training identity.
    train = [identities.sample_identity(identities.identity_rng(
        TINY['seed'], identities.TRAIN_STREAM, i)) for i in range(TINY['num_identities'])]
    for identity in set(i for pair in plan for i in pair):
        held_out = identities.sample_identity(identities.identity_rng(
            TINY['seed'], identities.VAL_STREAM, identity))
        assert held_out not in train


def test_identity_signal_beats_nuisance():
    """Images of one identity are closer (colour layout) than images of two."""
    items = [(i, j) for i in range(8) for j in range(6)]
    images = render.render_images(0, identities.TRAIN_STREAM, items, (32, 32))
    # 4x4 mean colours: a crude feature that keeps skin, hair and layout.
    features = images.astype(np.float32).reshape(len(items), 4, 8, 4, 8, 3).mean((2, 4))
    features = features.reshape(len(items), -1)
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    identity = np.array([i for i, _ in items])
    same = identity[:, None] == identity[None]
    off_diagonal = ~np.eye(len(items), dtype=bool)
    within = distances[same & off_diagonal].mean()
    between = distances[~same].mean()
    assert within < 0.8 * between, (within, between)


def test_render_is_per_image_deterministic():
    items = [(0, 0), (0, 1), (3, 2)]
    batch = render.render_images(5, identities.TRAIN_STREAM, items, (24, 40))
    assert batch.shape == (3, 24, 40, 3) and batch.dtype == np.uint8
    alone = render.render_images(5, identities.TRAIN_STREAM, items[2:], (24, 40))
    np.testing.assert_array_equal(batch[2], alone[0])
    assert not np.array_equal(batch[0], batch[1])
    with pytest.raises(ValueError, match=r'image_size \(4, 4\)'):
        render.render_images(5, identities.TRAIN_STREAM, items, (4, 4))


def test_bad_arguments_fail_with_one_line(tmp_path, capsys):
    out = str(tmp_path / 'x')
    assert make_synthetic_dataset.main(['--output_dir', out, '--num_val_pairs', '30']) == 2
    error = capsys.readouterr().err.strip()
    assert '\n' not in error and 'num_val_pairs=30' in error and 'multiple of 20' in error
    assert make_synthetic_dataset.main(['--output_dir', out, '--image_size', '112']) == 2
    assert 'height,width' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic_dataset.main(['--output_dir', out, '--num_identities', 'many'])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    os.makedirs(out)
    assert make_synthetic_dataset.main(['--output_dir', out, '--quiet']) == 2
    assert 'already exists' in capsys.readouterr().err
    assert not os.listdir(str(tmp_path / 'x'))


def test_overwrite_replaces_only_its_own_files(tmp_path):
    small = dict(TINY, num_identities=2, images_per_identity=1)
    out = str(tmp_path / 'set')
    make_synthetic_dataset.make_dataset(out, **small)
    notes = os.path.join(out, 'notes.txt')
    with open(notes, 'w') as f:
        f.write('mine')
    refusal = ('output_dir %s holds notes.txt, which make_synthetic_dataset.py did not write '
               '(its synthetic.json lists what it wrote); give a new or empty folder' % out)
    for overwrite in (False, True):
        with pytest.raises(ValueError) as error:
            make_synthetic_dataset.make_dataset(out, overwrite=overwrite, **small)
        assert str(error.value) == refusal
        assert sorted(os.listdir(out)) == sorted(FILES + ('notes.txt',))
        assert _read(notes) == b'mine'
    os.remove(notes)
    make_synthetic_dataset.make_dataset(out, overwrite=True, val_names='agedb_30', **small)
    assert sorted(os.listdir(out)) == ['agedb_30.bin', 'property', 'synthetic.json',
                                       'train.idx', 'train.rec']  # lfw.bin was its own
    mine = str(tmp_path / 'mine')  # someone else's folder: refused, even with --overwrite
    os.makedirs(os.path.join(mine, 'photos'))
    with pytest.raises(ValueError, match='holds photos, which make_synthetic_dataset.py did '
                                         'not write'):
        make_synthetic_dataset.make_dataset(mine, overwrite=True, **small)
    assert os.listdir(mine) == ['photos']
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    make_synthetic_dataset.make_dataset(empty, overwrite=True, **small)
    assert sorted(os.listdir(empty)) == sorted(FILES)
    assert sorted(os.listdir(str(tmp_path))) == ['empty', 'mine', 'set']  # no staging left


def test_interrupted_replacement_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """Killed after the first file moved in, the folder holds only its own files and a
    journal of them: the next run with overwrite accepts it and leaves a whole dataset."""
    small = dict(TINY, num_identities=2, images_per_identity=1)
    out = str(tmp_path / 'set')
    make_synthetic_dataset.make_dataset(out, **small)
    real_replace, calls = os.replace, []

    def dies_after_one_move(source, target):  # 1: the journal, 2: agedb_30.bin
        calls.append(target)
        if len(calls) == 3:
            raise KeyboardInterrupt()
        real_replace(source, target)

    monkeypatch.setattr(os, 'replace', dies_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset.make_dataset(out, overwrite=True, val_names='agedb_30', **small)
    monkeypatch.setattr(os, 'replace', real_replace)
    # The record went first (no longer complete); lfw.bin, no longer written, went too.
    assert sorted(os.listdir(out)) == ['.outputs.pending.json', 'agedb_30.bin', 'property',
                                       'train.idx', 'train.rec']
    make_synthetic_dataset.make_dataset(out, overwrite=True, **small)
    assert sorted(os.listdir(out)) == sorted(FILES)
    assert sorted(os.listdir(str(tmp_path))) == ['set']  # no staging left


def test_cli_writes_the_folder_atomically(tmp_path):
    """Runs the script as a user would, from another working directory."""
    out = tmp_path / 'cli'
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                          'make_synthetic_dataset.py')
    result = subprocess.run(
        [sys.executable, script, '--output_dir', str(out), '--num_identities', '3',
         '--images_per_identity', '2', '--num_val_identities', '2', '--num_val_pairs', '20',
         '--image_size', '16,24', '--val_names', 'lfw,agedb_30', '--num_workers', '1',
         '--preview_png', str(tmp_path / 'sheet.png')],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    assert result.returncode == 0, result.stderr
    # Not a terminal: the progress bar's final state (3 x 2 + 2 x 2 x 20 images) as a line.
    assert 'make_synthetic_dataset: 86/86 images (100.0%), ' in result.stderr
    assert sorted(os.listdir(str(out))) == sorted(
        ['agedb_30.bin', 'lfw.bin', 'property', 'synthetic.json', 'train.idx', 'train.rec'])
    assert sorted(os.listdir(str(tmp_path))) == ['cli', 'sheet.png']  # no staging left
    assert _read(str(tmp_path / 'sheet.png'))[:4] == b'\x89PNG'
    assert _read(str(out / 'property')).decode().strip() == '3,16,24'
