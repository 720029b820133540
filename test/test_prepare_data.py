"""Rebuilding the real-face inputs from the official downloads: prepare_faces.py (ORL's
PGMs, LFW's aligned JPEGs) and lfw_pairs.py (LFW's pairs.txt folds), on small made-up
folders in the same formats."""
import os
import pickle
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data import eval_data_reader, lfw_pairs, prepare_faces


def write_pgm(path, pixels, comment=True):
    height, width = pixels.shape
    header = b'P5\n' + (b'# made by a test\n' if comment else b'') + \
        ('%d %d\n255\n' % (width, height)).encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as out:
        out.write(header + pixels.astype(np.uint8).tobytes())


def write_jpeg(path, pixels):
    with tf.Graph().as_default(), tf.Session() as sess:
        data = sess.run(tf.image.encode_jpeg(tf.constant(pixels, tf.uint8), quality=100))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as out:
        out.write(data)


def decode(path):
    """RGB pixels of a JPEG, decoded as everywhere in the project (accurate DCT)."""
    with open(path, 'rb') as image:
        data = image.read()
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(tf.image.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE'))


def test_orl_pgms_are_padded_to_112(tmp_path, capsys):
    """ORL's 92x112 PGMs, centred on 112x112 black, as the shared orl_faces were made."""
    face = np.tile(np.linspace(60, 200, 92), (112, 1))
    write_pgm(str(tmp_path / 'att' / 's1' / '1.pgm'), face)
    write_pgm(str(tmp_path / 'att' / 's1' / '2.pgm'), face, comment=False)
    write_pgm(str(tmp_path / 'att' / 's2' / '1.pgm'), 255 - face)
    out = str(tmp_path / 'orl')
    assert prepare_faces.main(['--input_dir', str(tmp_path / 'att'), '--output_dir', out,
                               '--pad_to', '112,112']) == 0
    # stderr is not a terminal here: the progress bar's final state as a plain line.
    assert capsys.readouterr().err.splitlines()[-2].startswith(
        'prepare_faces: 2/2 identities (100.0%), ')
    assert sorted(os.listdir(out)) == ['s1', 's2'] and os.listdir(os.path.join(out, 's1')) \
        in (['1.jpg', '2.jpg'], ['2.jpg', '1.jpg'])
    image = decode(os.path.join(out, 's1', '1.jpg'))
    assert image.shape == (112, 112, 3)
    assert image[:, :8].max() < 12 and image[:, -8:].max() < 12  # 10 black columns a side
    np.testing.assert_allclose(image[:, 10:102, 0].mean(axis=0), face[0], atol=4)


def test_lfw_crop_resize_grey(tmp_path, capsys):
    rng = np.random.RandomState(0)
    photo = rng.randint(0, 256, (250, 250, 3)).astype(np.uint8)
    photo[50:200, 50:200] = [30, 120, 220]  # the face area, one colour (RGB)
    write_jpeg(str(tmp_path / 'lfw' / 'Ann' / 'Ann_0001.jpg'), photo)
    out = str(tmp_path / 'lfw_112')
    assert prepare_faces.main(['--input_dir', str(tmp_path / 'lfw'), '--output_dir', out,
                               '--crop', '50,50,200,200', '--size', '112,112', '--grey',
                               '--no_progress']) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == 'prepare_faces: wrote 1 images of 1 identities to %s' % out
    assert 'identities (' not in err  # no progress line
    image = decode(os.path.join(out, 'Ann', 'Ann_0001.jpg'))
    assert image.shape == (112, 112, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    luma = 0.299 * 30 + 0.587 * 120 + 0.114 * 220  # the crop holds the face alone
    assert abs(image[8:-8, 8:-8].astype(float).mean() - luma) < 2


@pytest.mark.parametrize('case,message', [
    ('missing', 'no such folder'),
    ('exists', 'exists; give a new folder'),
    ('outside', r'is 20x20; --crop 0,0,30,30 reaches outside it'),
])
def test_prepare_refusals(tmp_path, capsys, case, message):
    write_jpeg(str(tmp_path / 'in' / 'a' / '1.jpg'), np.zeros((20, 20, 3), np.uint8))
    out = tmp_path / 'out'
    if case == 'exists':
        out.mkdir()
    args = ['--input_dir', str(tmp_path / ('nope' if case == 'missing' else 'in')),
            '--output_dir', str(out), '--crop', '0,0,30,30' if case == 'outside' else '0,0,5,5']
    assert prepare_faces.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert case == 'exists' or not out.exists()  # nothing half-made


def make_lfw(root):
    """22 people: P00-P09 in fold 1, P10-P19 in fold 2, Q0-Q1 in no fold; 3 images each."""
    names = ['P%02d' % i for i in range(20)] + ['Q0', 'Q1']
    for value, name in enumerate(names):
        for number in (1, 2, 3):
            write_jpeg(os.path.join(root, name, '%s_%04d.jpg' % (name, number)),
                       np.full((16, 16, 3), 10 * value + number, np.uint8))
    lines = ['2\t10']
    for fold in range(2):
        people = names[10 * fold:10 * fold + 10]
        lines += ['%s\t1\t%d' % (p, 2 + i % 2) for i, p in enumerate(people)]
        lines += ['%s\t1\t%s\t3' % (p, people[(i + 1) % 10]) for i, p in enumerate(people)]
    path = os.path.join(root, 'pairs.txt')
    with open(path, 'w') as pairs:
        pairs.write('\n'.join(lines) + '\n')
    return path


def test_a_fold_of_pairs_txt_and_the_people_of_the_other_folds(tmp_path):
    root = str(tmp_path / 'lfw')
    pairs_txt = make_lfw(root)
    out, train = str(tmp_path / 'dev.bin'), str(tmp_path / 'train')
    assert lfw_pairs.main(['--pairs_txt', pairs_txt, '--image_dir', root, '--fold', '2',
                           '--output', out, '--train_dir', train]) == 0
    with open(out, 'rb') as f:
        bins, issame = pickle.load(f, encoding='bytes')  # insightface's loader
    assert issame == [True, False] * 10  # each tenth: one same, one different pair
    images, _ = eval_data_reader.load_bin(out, (16, 16))
    values = images[:, 0, 0, 0].reshape(-1, 2)
    # Pair 0 is fold 2's first same pair, P10 images 1 and 2; pair 1 its first different
    # pair, P10 image 1 with P11 image 3.
    assert values[0].tolist() == [101, 102] and values[1].tolist() == [101, 113]
    assert sorted(os.listdir(train)) == ['P%02d' % i for i in range(10)] + ['Q0', 'Q1']
    assert os.path.islink(os.path.join(train, 'Q0'))


@pytest.mark.parametrize('edit,message', [
    (lambda lines: ['10 300'] + lines[1:], r'pair lines; "10 300" on line 1 means 6000'),
    (lambda lines: lines[:3] + ['P02\t1'] + lines[4:], r'line 4: expected "name n1 n2"'),
])
def test_bad_pairs_txt_is_one_line(tmp_path, capsys, edit, message):
    root = str(tmp_path / 'lfw')
    pairs_txt = make_lfw(root)
    with open(pairs_txt) as f:
        lines = f.read().splitlines()
    with open(pairs_txt, 'w') as f:
        f.write('\n'.join(edit(lines)) + '\n')
    assert lfw_pairs.main(['--pairs_txt', pairs_txt, '--image_dir', root,
                           '--output', str(tmp_path / 'x.bin')]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
