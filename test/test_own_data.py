"""A user's own photos: folders of faces in, pairs, training, embeddings and ONNX out.

The folders are written from the shared ORL faces (../shared/data/orl_faces):
each image of train.rec saved as a file, one folder per person.
"""
import filecmp
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import checkpoint_names

import export_model
from losses import objective
from nets import inference
import verification
import extract_features
from data import eval_data_reader, folder2tfrecords, image_ops, make_pairs, mx2tfrecords
from data import recordio, recordio_reader
from data import manifest as manifest_lib

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_ONNX = export_model.onnx_converter() is not None


def write_folder(rec_dir, root, identities=None, per_identity=None):
    """DIR/person_<label>/<key>.jpg from a .rec: the records' bytes, unchanged."""
    with recordio_reader.IndexedRecordReader(os.path.join(rec_dir, 'train.rec'),
                                             os.path.join(rec_dir, 'train.idx')) as reader:
        for record in reader.iter_images():
            header, payload = recordio.unpack(record.data)
            label = int(header.label if header.flag == 0 else header.label[0])
            if identities is not None and label >= identities:
                continue
            folder = os.path.join(root, 'person_%02d' % label)
            if not os.path.isdir(folder):
                os.makedirs(folder)
            if per_identity is not None and len(os.listdir(folder)) >= per_identity:
                continue
            with open(os.path.join(folder, '%05d.jpg' % record.key), 'wb') as image:
                image.write(payload)
    return root


@pytest.fixture(scope='module')
def orl(shared_data):
    return os.path.join(shared_data, 'orl_faces')


@pytest.fixture(scope='module')
def orl_folder(orl, tmp_path_factory):
    return write_folder(orl, str(tmp_path_factory.mktemp('orl_folder')))


def run(script, args, timeout=300):
    return subprocess.run([sys.executable, script] + args, cwd=PROJECT_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


# What TensorFlow's C++ runtime prints on import, whatever TF_CPP_MIN_LOG_LEVEL says.
_TF_NOISE = re.compile(r'^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:)')


def own_lines(stderr):
    """The lines the tool itself wrote to stderr."""
    return [line for line in stderr.strip().splitlines() if not _TF_NOISE.match(line)]


# ---- folder2tfrecords ----

def test_folder_gives_the_records_of_the_rec(orl, orl_folder, tmp_path):
    """Same labels, same bytes (so the same pixels), byte-identical shards; two workers."""
    from_rec = str(tmp_path / 'rec')
    mx2tfrecords.convert(os.path.join(orl, 'train.rec'), os.path.join(orl, 'train.idx'),
                         from_rec, num_shards=2, progress=False)
    from_folder = str(tmp_path / 'folder')
    result = run('data/folder2tfrecords.py', ['--image_dir', orl_folder, '--tfrecords_file_path',
                                              from_folder, '--num_shards', '2',
                                              '--num_workers', '2'])
    assert result.returncode == 0, result.stderr
    assert own_lines(result.stderr)[-1] == (
        'folder2tfrecords: wrote 300 images of 30 identities (112x112) in 2 shards to %s'
        % from_folder)
    rec_manifest = manifest_lib.load_manifest(from_rec)
    folder_manifest = manifest_lib.load_manifest(from_folder)
    assert folder_manifest['identities'] == ['person_%02d' % i for i in range(30)]
    for key in ('num_images', 'num_classes', 'image_size', 'shards'):
        assert folder_manifest[key] == rec_manifest[key], key
    for rec_shard, folder_shard in zip(rec_manifest['shard_paths'],
                                       folder_manifest['shard_paths']):
        assert filecmp.cmp(rec_shard, folder_shard, shallow=False)


def make_image(path, size, value=128, corrupt=False):
    """A JPEG of `size` (height, width) written with TensorFlow; corrupt: body zeroed."""
    with tf.Graph().as_default(), tf.Session() as sess:
        data = sess.run(tf.image.encode_jpeg(tf.fill(list(size) + [3], tf.constant(value,
                                                                                     tf.uint8))))
    if corrupt:
        data = data[:200] + b'\0' * (len(data) - 200)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(path, 'wb') as image:
        image.write(data)


@pytest.mark.parametrize('case,message', [
    ('missing', r'--image_dir \S+/faces: no such folder'),
    ('no_identities', r'--image_dir \S+/faces holds no identity folders'),
    ('empty_identity', r'\S+/faces/bob holds no image \(\.jpg, \.jpeg, \.png\)'),
    ('corrupt', r'\S+/faces/bob/2\.jpg: not a decodable JPEG or PNG image'),
    ('mixed_sizes', r'\S+/faces/bob/2\.jpg is 20x24, expected 16x16 \(height x width\) like '
                    r'the others; pass --resize'),
])
def test_folder_refusals_are_one_line(tmp_path, case, message):
    faces = str(tmp_path / 'faces')
    if case != 'missing':
        os.makedirs(faces)
    if case in ('empty_identity', 'corrupt', 'mixed_sizes'):
        make_image(os.path.join(faces, 'alice', '1.jpg'), (16, 16))
        os.makedirs(os.path.join(faces, 'bob'))
    if case in ('corrupt', 'mixed_sizes'):
        make_image(os.path.join(faces, 'bob', '1.jpg'), (16, 16))
        make_image(os.path.join(faces, 'bob', '2.jpg'), (20, 24) if case == 'mixed_sizes'
                   else (16, 16), corrupt=case == 'corrupt')
    out = str(tmp_path / 'out')
    for script, args in [('data/folder2tfrecords.py', ['--tfrecords_file_path', out,
                                                       '--num_workers', '1']),
                         ('data/make_pairs.py', ['--output', str(tmp_path / 'p.bin'),
                                                 '--num_pairs', '20'])]:
        result = run(script, ['--image_dir', faces] + args)
        assert result.returncode == 2, (script, result.stderr)
        assert len(own_lines(result.stderr)) == 1, result.stderr
        if script == 'data/make_pairs.py' and case in ('corrupt', 'mixed_sizes'):
            continue  # two people of one and two images make no 10 folds of pairs
        assert re.search(message, result.stderr), (script, result.stderr)
    assert not os.path.exists(out) and not os.path.exists(str(tmp_path / 'p.bin'))


def test_skip_bad_leaves_out_and_lists_bad_images(tmp_path):
    faces = str(tmp_path / 'faces')
    make_image(os.path.join(faces, 'alice', '1.jpg'), (16, 16), value=60)
    make_image(os.path.join(faces, 'bob', '1.jpg'), (16, 16), value=120)
    make_image(os.path.join(faces, 'bob', '2.jpg'), (16, 16), corrupt=True)
    make_image(os.path.join(faces, 'bob', '3.jpg'), (20, 24))
    out = str(tmp_path / 'out')
    result = run('data/folder2tfrecords.py', ['--image_dir', faces, '--tfrecords_file_path',
                                              out, '--num_workers', '1', '--skip_bad'])
    assert result.returncode == 0, result.stderr
    bad = {os.path.join(faces, 'bob', '2.jpg'): 'not a decodable JPEG or PNG image',
           os.path.join(faces, 'bob', '3.jpg'): 'is 20x24, expected 16x16'}
    lines = own_lines(result.stderr)
    for path, problem in bad.items():
        assert any(line.startswith('folder2tfrecords: skipped %s' % path) and problem in line
                   for line in lines), lines
    assert 'folder2tfrecords: skipped 2 bad images' in result.stderr
    manifest = manifest_lib.load_manifest(out)
    assert sorted(entry['file'] for entry in manifest['skipped']) == sorted(bad)
    assert (manifest['num_images'], manifest['num_classes']) == (2, 2)
    records = [tf.train.Example.FromString(r) for r in tf.python_io.tf_record_iterator(
        manifest['shard_paths'][0])]
    for record, name in zip(records, ['alice/1.jpg', 'bob/1.jpg']):
        with open(os.path.join(faces, name), 'rb') as image:
            assert record.features.feature['image_raw'].bytes_list.value[0] == image.read()


def test_resize_reencodes_only_images_of_another_size(tmp_path):
    faces = str(tmp_path / 'faces')
    make_image(os.path.join(faces, 'alice', '1.jpg'), (16, 16), value=60)
    make_image(os.path.join(faces, 'bob', '1.jpg'), (20, 24), value=200)
    out = str(tmp_path / 'out')
    manifest = folder2tfrecords.convert(faces, out, image_size=(16, 16), resize=True,
                                        progress=False)
    assert manifest['image_size'] == [16, 16] and manifest['num_classes'] == 2
    records = [tf.train.Example.FromString(r) for r in tf.python_io.tf_record_iterator(
        manifest_lib.load_manifest(out)['shard_paths'][0])]
    payloads = [r.features.feature['image_raw'].bytes_list.value[0] for r in records]
    with open(os.path.join(faces, 'alice', '1.jpg'), 'rb') as original:
        assert payloads[0] == original.read()  # the right size: stored unchanged
    images = eval_data_reader.decode_images(payloads, (16, 16))
    assert abs(int(images[1].mean()) - 200) <= 2  # resized, still the same grey


# ---- make_pairs ----

def images_by_identity(folder):
    """{encoded bytes: identity} of a folder written by write_folder."""
    found = {}
    for name in os.listdir(folder):
        for image in os.listdir(os.path.join(folder, name)):
            with open(os.path.join(folder, name, image), 'rb') as f:
                found[f.read()] = name
    return found


def test_pairs_in_balanced_identity_disjoint_folds(orl_folder, tmp_path):
    out = str(tmp_path / 'my_val.bin')
    result = run('data/make_pairs.py', ['--image_dir', orl_folder, '--output', out,
                                        '--num_pairs', '200', '--seed', '3',
                                        '--split_identities'])
    assert result.returncode == 0, result.stderr
    # insightface's own loader: pickle.load(f, encoding='bytes').
    with open(out, 'rb') as f:
        bins, issame = pickle.load(f, encoding='bytes')
    assert len(bins) == 400 and len(issame) == 200
    owner = images_by_identity(orl_folder)
    folds_of = {}
    for fold in range(10):
        rows = range(fold * 20, (fold + 1) * 20)
        assert [issame[i] for i in rows] == [True] * 10 + [False] * 10
        for i in rows:
            first, second = owner[bins[2 * i]], owner[bins[2 * i + 1]]
            assert (first == second) == issame[i]
            for person in (first, second):
                folds_of.setdefault(person, set()).add(fold)
    assert all(len(folds) == 1 for folds in folds_of.values()), folds_of
    pairs = set(tuple(sorted((bins[2 * i], bins[2 * i + 1]))) for i in range(200))
    assert len(pairs) == 200  # no pair twice
    images, labels = eval_data_reader.load_bin(out)  # and this project's loader
    assert images.shape == (400, 112, 112, 3) and labels.tolist() == list(issame)
    again = str(tmp_path / 'again.bin')
    make_pairs.main(['--image_dir', orl_folder, '--output', again, '--num_pairs', '200',
                     '--seed', '3', '--split_identities'])
    assert filecmp.cmp(out, again, shallow=False)  # the seed decides


@pytest.mark.parametrize('args,message', [
    (['--num_pairs', '30'], '--num_pairs 30: expected a multiple of 20'),
    (['--num_pairs', '4000', '--split_identities'],
     r'--num_pairs 4000 needs 200 same-person pairs per fold; fold 1 has only 135 left'),
])
def test_pairs_refusals(orl_folder, tmp_path, capsys, args, message):
    out = str(tmp_path / 'x.bin')
    assert make_pairs.main(['--image_dir', orl_folder, '--output', out] + args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not os.path.exists(out)


# ---- --overwrite replaces only the tool's own output ----

@pytest.fixture(scope='module')
def tiny_faces(tiny_data, tmp_path_factory):
    """8 people x 6 synthetic faces of 32x32 as files (from the tiny dataset's .rec)."""
    return write_folder(tiny_data['raw'], str(tmp_path_factory.mktemp('tiny_faces')))


def _refused(capsys, status, message):
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [message]


def _users_file_is_kept(capsys, main, flags, out, prog, writer, content):
    """A file of the user's at --output `out`: refused without --overwrite, refused with
    it too (the tool did not write it), and left as it was; then removed."""
    with open(out, 'wb') as f:
        f.write(content)
    _refused(capsys, main(flags),
             '%s: error: --output %s exists; pass --overwrite to replace it' % (prog, out))
    _refused(capsys, main(flags + ['--overwrite']),
             '%s: error: --output %s was not written by %s (it has no record %s); '
             '--overwrite replaces only that: move it away or choose another name'
             % (prog, out, writer, '.%s.written.json' % os.path.basename(out)))
    with open(out, 'rb') as f:
        assert f.read() == content
    os.remove(out)


def test_pairs_overwrite_replaces_only_its_own_bin(tiny_faces, tmp_path, capsys):
    out = str(tmp_path / 'lfw.bin')
    flags = ['--image_dir', tiny_faces, '--output', out, '--num_pairs', '20']
    _users_file_is_kept(capsys, make_pairs.main, flags, out, 'make_pairs', 'make_pairs',
                        b'a downloaded lfw.bin')
    assert make_pairs.main(flags) == 0
    first = eval_data_reader.read_bin(out)
    assert make_pairs.main(flags + ['--seed', '1', '--overwrite']) == 0  # its own: replaced
    assert eval_data_reader.read_bin(out)[0] != first[0]
    assert sorted(os.listdir(str(tmp_path))) == ['.lfw.bin.written.json', 'lfw.bin']


def test_features_overwrite_replaces_only_its_own_npz(tiny_faces, tmp_path, capsys):
    from test_eval_ckpt_file import make_backbone_checkpoint
    out = str(tmp_path / 'features.npz')
    flags = ['--ckpt_file', str(tmp_path / 'no_checkpoint'), '--image_dir', tiny_faces,
             '--output', out, '--device', 'cpu', '--net_depth', '18', '--image_size', '32,32']
    _users_file_is_kept(capsys, extract_features.main, flags, out, 'extract_features.py',
                        'extract_features.py', b'mine')
    flags[1] = make_backbone_checkpoint(str(tmp_path), 18, (32, 32))
    assert extract_features.main(flags) == 0
    assert extract_features.main(flags + ['--overwrite']) == 0
    assert np.load(out)['embeddings'].shape == (48, 512)


# ---- from a folder to a model, end to end ----

def onnx_embeddings(model_path, images):
    import onnxruntime
    session = onnxruntime.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['input_images']
    return session.run(['embeddings'], {'input_images': images})[0]


def test_from_a_folder_to_features_and_onnx(orl, tmp_path):
    """The README's commands for one's own photos, in order, on 12 ORL people."""
    faces = write_folder(orl, str(tmp_path / 'faces'), identities=12, per_identity=6)
    records, ckpt = str(tmp_path / 'records'), str(tmp_path / 'ckpt')
    val = str(tmp_path / 'val')
    os.makedirs(val)
    steps = [
        ('data/folder2tfrecords.py', ['--image_dir', faces, '--tfrecords_file_path', records,
                                      '--num_workers', '1']),
        ('data/make_pairs.py', ['--image_dir', faces, '--output',
                                os.path.join(val, 'my_val.bin'), '--num_pairs', '40']),
        ('train_nets.py', ['--tfrecords_file_path', records, '--net_depth', '18',
                           '--net_input_size', '28,28', '--batch_size', '8', '--max_steps', '2',
                           '--eval_db_path', val, '--eval_datasets', 'my_val',
                           '--validate_interval', '2', '--ckpt_path', ckpt,
                           '--summary_path', str(tmp_path / 'summary'),
                           '--log_file_path', str(tmp_path / 'logs'), '--device', 'cpu',
                           # float32 like eval_ckpt_file.py: validation during a bfloat16 run
                           # embeds in bfloat16 and may differ by a pair (docs/training.md)
                           '--mixed_precision', 'off', '--summary_histograms', 'False']),
        ('eval_ckpt_file.py', ['--ckpt_file', ckpt, '--net_input_size', '28,28',
                               '--eval_db_path', val, '--eval_datasets', 'my_val',
                               '--output_json', str(tmp_path / 'eval.json'),
                               '--device', 'cpu']),
        ('extract_features.py', ['--ckpt_file', ckpt, '--net_input_size', '28,28',
                                 '--image_dir', faces, '--output',
                                 str(tmp_path / 'features.npz'), '--device', 'cpu']),
    ]
    if HAS_ONNX:
        steps.append(('export_model.py', ['--ckpt_file', ckpt, '--net_input_size', '28,28',
                                          '--format', 'pb', '--onnx', '--output_dir',
                                          str(tmp_path / 'export')]))
    for script, args in steps:
        result = run(script, args)
        assert result.returncode == 0, (script, result.stdout, result.stderr)
        if script == 'train_nets.py':
            trained = re.search(r'\[my_val\]\[2\]Accuracy-Flip: (\d\.\d{5})',
                                result.stdout + result.stderr).group(1)
    with open(str(tmp_path / 'eval.json')) as f:
        assert '%.5f' % json.load(f)['results'][0]['accuracy'] == trained

    features = np.load(str(tmp_path / 'features.npz'))
    assert features['embeddings'].shape == (72, 512)
    assert features['files'][0] == os.path.join('person_00', '00001.jpg')
    assert sorted(set(features['identities'].tolist())) == ['person_%02d' % i
                                                            for i in range(12)]
    np.testing.assert_allclose(np.linalg.norm(features['embeddings'], axis=1), 1.0, atol=1e-5)

    # --compare: an image with itself, and with another person's, at eval.json's threshold.
    first = os.path.join(faces, features['files'][0])
    other = os.path.join(faces, features['files'][-1])
    for pair, decision in [((first, first), 'same person'), ((first, other), None)]:
        result = run('extract_features.py', ['--ckpt_file', ckpt, '--net_input_size', '28,28',
                                             '--compare', pair[0], pair[1], '--threshold_from',
                                             str(tmp_path / 'eval.json'), '--device', 'cpu'])
        assert result.returncode == 0, result.stderr
        cosine = float(re.search(r'^cosine similarity (-?\d\.\d{4}) ', result.stdout).group(1))
        expected = float(np.dot(features['embeddings'][features['files'].tolist().index(
            os.path.relpath(pair[0], faces))], features['embeddings'][features['files'].tolist(
                ).index(os.path.relpath(pair[1], faces))]))
        assert abs(cosine - expected) < 1e-4
        assert 'from %s [my_val]: ' % (tmp_path / 'eval.json') in result.stdout
        if decision:
            assert result.stdout.strip().endswith(decision)

    if HAS_ONNX:
        # onnxruntime gives the checkpoint's embeddings: the protocol's, from image and mirror.
        images = eval_data_reader.decode_images(
            [open(os.path.join(faces, f), 'rb').read() for f in features['files']], (112, 112))
        model = str(tmp_path / 'export' / export_model.ONNX_MODEL)
        raw = onnx_embeddings(model, images)
        mirrored = onnx_embeddings(model, np.ascontiguousarray(images[:, :, ::-1]))
        onnx_features = verification.combine_flip(raw, mirrored)
        assert np.abs(onnx_features - features['embeddings']).max() < 1e-4


def orl_checkpoint(faces, net_input_size, folder):
    """A depth-18 checkpoint at `net_input_size` whose batch-norm statistics are those of
    `faces` (uint8 [16, 112, 112, 3]); returns its prefix."""
    prefix = os.path.join(folder, 'InsightFace_iter_0.ckpt')
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        inputs = image_ops.resize_for_network(image_ops.normalize(tf.constant(faces)),
                                              net_input_size)
        objective.training_losses(inputs, tf.constant(np.arange(16) % 4, tf.int64), 18, 4)
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(30):  # moving averages (decay 0.9) of these faces' statistics
                sess.run(update_ops)
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


@pytest.mark.skipif(not HAS_ONNX, reason='tf2onnx is in the TensorFlow 2.x environment only')
def test_an_export_that_does_not_reproduce_the_checkpoint_is_an_error(orl, tmp_path, capsys,
                                                                      monkeypatch):
    """The resize this port used before: TensorFlow's ResizeArea, which tf2onnx converts
    into a nearest-neighbour Resize at 112 -> 32. export_model.py checks the ONNX model
    against the checkpoint and refuses it: exit 1, one line, nothing written."""
    images, _ = eval_data_reader.load_bin(os.path.join(orl, 'orl_val.bin'))
    monkeypatch.setattr(image_ops, 'resize_for_network',
                        lambda batch, size: tf.image.resize_area(batch, list(size)))
    prefix = orl_checkpoint(images[:16], (32, 32), str(tmp_path / 'ckpt'))
    out = str(tmp_path / 'export')
    capsys.readouterr()
    assert export_model.main(['--ckpt_file', prefix, '--format', 'pb', '--onnx',
                              '--net_input_size', '32,32', '--output_dir', out]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith('export_model.py: error: model.onnx does not reproduce the '
                          'checkpoint: on 8 synthetic faces'), err
    assert err.rstrip().endswith('nothing written')
    assert not os.path.exists(out)


@pytest.mark.skipif(not HAS_ONNX, reason='tf2onnx is in the TensorFlow 2.x environment only')
@pytest.mark.parametrize('net_size', [32, 56, 112])
def test_onnx_matches_the_checkpoint_on_orl_val(orl, tmp_path, net_size):
    """An ORL-sized network (112x112 images, depth 18, batch-norm statistics of real faces,
    so the embeddings have a trained network's scale) at each --net_input_size: its ONNX
    export in onnxruntime against the checkpoint in TensorFlow on orl_val.bin. 112 -> 32 is
    not a whole factor: TensorFlow's ResizeArea became a nearest-neighbour Resize in ONNX
    (cosine 0.97 on average), the matrix-product resize is exact; 112 -> 56 is an average
    pool; at 112 nothing is resized."""
    images, issame = eval_data_reader.load_bin(os.path.join(orl, 'orl_val.bin'))
    distinct, inverse = eval_data_reader.distinct_images(images)
    size = (net_size, net_size)
    prefix = orl_checkpoint(images[distinct[:16]], size, str(tmp_path / 'ckpt'))
    with tf.Graph().as_default():
        images_ph, embeddings = inference.inference_graph(18, (112, 112), net_input_size=size)
        with tf.Session() as sess:
            tf.train.Saver(checkpoint_names.backbone_variables(18)).restore(sess, prefix)
            tf_passes = verification.embed_images(sess, images_ph, embeddings, images, 32)
    out = str(tmp_path / 'export')
    assert export_model.main(['--ckpt_file', prefix, '--format', 'pb', '--onnx',
                              '--net_input_size', '%d,%d' % size, '--output_dir', out]) == 0
    model = os.path.join(out, export_model.ONNX_MODEL)
    onnx_passes = [onnx_embeddings(model, np.ascontiguousarray(batch))[inverse]
                   for batch in (images[distinct], images[distinct][:, :, ::-1])]
    for tf_pass, onnx_pass in zip(tf_passes, onnx_passes):
        scale = np.abs(tf_pass).max()
        assert np.abs(tf_pass - onnx_pass).max() < 1e-4 * max(1.0, scale), scale
    # What the protocol compares: flip-summed, normalised embeddings.
    np.testing.assert_allclose(verification.combine_flip(*onnx_passes),
                               verification.combine_flip(*tf_passes), atol=1e-4)
    tf_result = verification.evaluate_flip(tf_passes[0], tf_passes[1], issame)
    onnx_result = verification.evaluate_flip(onnx_passes[0], onnx_passes[1], issame)
    assert onnx_result.accuracy == tf_result.accuracy
    assert onnx_result.threshold == tf_result.threshold


@pytest.mark.skipif(HAS_ONNX, reason='checks the refusal where tf2onnx is absent')
def test_onnx_is_refused_without_tf2onnx(tmp_path, capsys):
    assert export_model.main(['--ckpt_file', str(tmp_path), '--onnx', '--output_dir',
                              str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert '--onnx needs tf2onnx' in err and len(err.strip().splitlines()) == 1
