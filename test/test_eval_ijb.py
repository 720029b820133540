"""eval_ijb.py and its library (evaluation/ijb_embed, ijb_models, ijb_cache, ijb_plot):
the table and the JSON against the protocol on embeddings computed here, the features
cache, a frozen graph and an ONNX model against their checkpoint, the refusals.

The release is tiny and made here in insightface's layout: 12 synthetic faces (4
identities x 3, data/synthetic) each warped by a known similarity into a 160x160 loose
crop, with ArcFace's template carried through the same warp as its landmarks; 8
templates (one per identity holds a 2-frame "video", one two photos), 28 template pairs
(4 genuine). The checkpoint is test_eval_ckpt_file.make_checkpoints' (depth 18, trained
one step on 28x28 faces, batch-norm statistics warmed up), so the network runs at
--net_input_size 28,28: the 112x112 crops are shrunk to it by a 4x4 average.

main() runs in-process (a TensorFlow start-up costs seconds) except for one subprocess
run of the whole command.
"""
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import eval_ijb
import export_model
from devices import runtime
from evaluation import ijb_align, ijb_cache, ijb_embed, ijb_meta, ijb_plot, ijb_protocol
from nets import checkpoint_names, inference
from data import safe_files
from data.synthetic import identities, render
from test_eval_ckpt_file import make_checkpoints

from conftest import PROJECT_ROOT  # noqa: E402

DEPTH = 18
# A whole factor of 112: the shrink is an average pool, which ONNX has (tf2onnx turns
# TensorFlow's area resize of other factors into a bilinear Resize, another network).
NET_INPUT = (28, 28)
PEOPLE, SHOTS = 4, 3
CANVAS = 160
ROW = re.compile(r'^(\S+)\s+(IJB[BC])' + r'\s+(\d+\.\d\d)' * 6 + '$')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
HAS_ONNX = all(importlib.util.find_spec(name) is not None
               for name in ('tf2onnx', 'onnxruntime'))


# ---------------------------------------------------------------------------
# A tiny release and a tiny network
# ---------------------------------------------------------------------------
def _similarity(rng):
    angle = np.radians(rng.uniform(-15, 15))
    scale = rng.uniform(1.05, 1.3)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)],
                                 [np.sin(angle), np.cos(angle)]])
    corners = np.array([[0, 0], [111, 0], [0, 111], [111, 111]], np.float64) @ rotation.T
    low, high = corners.min(axis=0), corners.max(axis=0)
    shift = rng.uniform(-low, CANVAS - 1 - high)  # the whole face inside the canvas
    return np.hstack([rotation, shift[:, np.newaxis]])


def write_release(root, seed=5):
    """Writes the release (IJBC) under `root`; returns {'meta': IJBMeta, 'root': root}."""
    import cv2
    rng = np.random.RandomState(seed)
    faces = render.render_images(seed, identities.VAL_STREAM,
                                 [(person, shot) for person in range(PEOPLE)
                                  for shot in range(SHOTS)], (112, 112))
    os.makedirs(os.path.join(root, 'loose_crop'))
    os.makedirs(os.path.join(root, 'meta'))
    template = ijb_align.ARCFACE_TEMPLATE.astype(np.float64)
    landmark_lines, media_lines = [], []
    for k, face in enumerate(faces):
        matrix = _similarity(rng)
        loose = cv2.warpAffine(face, matrix, (CANVAS, CANVAS), borderValue=(128, 128, 128))
        name = '%d.jpg' % (k + 1)
        assert cv2.imwrite(os.path.join(root, 'loose_crop', name), loose,
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
        points = template @ matrix[:, :2].T + matrix[:, 2]
        landmark_lines.append('%s %s %.3f' % (name, ' '.join('%.3f' % v for v in points.ravel()),
                                             0.6 + 0.03 * k))
        person, shot = divmod(k, SHOTS)
        template_id = 2 * person + 1 + (shot == 2)
        # person 0 and 2: shots 0 and 1 are frames of one video; 1 and 3: two photos
        media = 100 + k if (person % 2 or shot == 2) else 100 + SHOTS * person
        media_lines.append('%s %d %d' % (name, template_id, media))
    templates = range(1, 2 * PEOPLE + 1)
    pairs = ['%d %d %d' % (a, b, int((a - 1) // 2 == (b - 1) // 2))
             for a in templates for b in templates if a < b]
    for which, lines in ((ijb_meta.LANDMARKS, landmark_lines),
                         (ijb_meta.TEMPLATE_MEDIA, media_lines), (ijb_meta.PAIRS, pairs)):
        with open(ijb_meta.meta_path(root, 'IJBC', which), 'w') as out:
            out.write('\n'.join(lines) + '\n')
    return {'root': root, 'meta': ijb_meta.read_meta(root, 'IJBC')}


def reference_embeddings(prefix, root, meta):
    """Embeddings of the aligned crops and of their mirrors, computed here: the inference
    graph with a dynamic batch, all 12 crops at once."""
    crops = np.stack([ijb_align.align(ijb_align.read_image(ijb_meta.image_file(root, name)),
                                      landmarks)
                      for name, landmarks in zip(meta.image_names, meta.landmarks)])
    with tf.Graph().as_default():
        images, embeddings = inference.inference_graph(DEPTH, (112, 112),
                                                       net_input_size=NET_INPUT)
        saver = tf.train.Saver(var_list=checkpoint_names.backbone_variables(DEPTH))
        with tf.Session(config=runtime.session_config('cpu')) as sess:
            saver.restore(sess, prefix)
            return (sess.run(embeddings, {images: crops}),
                    sess.run(embeddings, {images: np.ascontiguousarray(crops[:, :, ::-1])}))


def protocol(meta, embeddings, flipped, **modes):
    """(pair scores, Roc, TAR@FAR) by evaluation.ijb_protocol."""
    features = ijb_protocol.image_features(embeddings, flipped, meta.detector_scores, **modes)
    pooled, ids = ijb_protocol.template_features(features, meta.templates, meta.medias)
    scores = ijb_protocol.pair_scores(pooled, ids, meta.t1, meta.t2)
    curve = ijb_protocol.roc(meta.labels, scores)
    return scores, curve, ijb_protocol.tar_at_far(curve.fpr, curve.tpr)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """The release, two checkpoints (steps 1, 2), the export of step 1 (frozen graph, and
    ONNX where tf2onnx is), and the embeddings of step 1 computed here."""
    root = tmp_path_factory.mktemp('ijb')
    release = write_release(str(root / 'IJBC'))
    prefixes = make_checkpoints(str(root / 'ckpt'), (1, 2), image_size=NET_INPUT,
                                 batch_size=8, bn_warmup=20)
    export = str(root / 'export')
    assert export_model.main(['--ckpt_file', prefixes[1], '--image_size', '112,112',
                              '--net_input_size', '%d,%d' % NET_INPUT, '--format', 'pb',
                              '--output_dir', export] + (['--onnx'] if HAS_ONNX else [])) == 0
    embeddings, flipped = reference_embeddings(prefixes[1], release['root'], release['meta'])
    return dict(release, base=str(root), prefixes=prefixes, export=export,
                embeddings=embeddings, flipped=flipped)


def flags(setup, *extra):
    return ['--ijb_root', setup['root'], '--net_input_size', '%d,%d' % NET_INPUT,
            '--batch_size', '5', '--num_workers', '2', '--device', 'cpu'] + list(extra)


def table_rows(stdout):
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ['checkpoint', 'target', 'TAR@FAR=1e-6', 'TAR@FAR=1e-5',
                                'TAR@FAR=1e-4', 'TAR@FAR=1e-3', 'TAR@FAR=1e-2',
                                'TAR@FAR=1e-1'], lines
    rows = [ROW.match(line) for line in lines[1:]]
    assert all(rows), lines
    return [(row.group(1), row.group(2), list(row.groups()[2:])) for row in rows]


def percent(tars):
    return ['%.2f' % (100 * tar) for tar in tars]


# ---------------------------------------------------------------------------
# The whole command
# ---------------------------------------------------------------------------
def test_the_release_is_what_the_test_meant(setup):
    meta = setup['meta']
    assert len(meta.image_names) == 12 and np.unique(meta.templates).size == 8
    assert (meta.labels == 1).sum() == 4 and (meta.labels == 0).sum() == 24
    assert 0.5 < np.abs(setup['embeddings']).max() < 50  # a realistic scale


def test_table_json_plot_and_scores_agree_with_the_protocol(setup, tmp_path):
    """The CLI as a subprocess (2 workers, batches of 5: the last one padded): its row,
    JSON, scores and plot against ijb_protocol on the embeddings computed here."""
    out = tmp_path / 'out'
    command = [sys.executable, 'eval_ijb.py', '--ckpt_file', setup['prefixes'][1],
               '--output_json', str(out / 'ijb.json'), '--plot', str(out / 'roc.png'),
               '--scores_npy', str(out / 'scores.npy')] + flags(setup)
    run = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert run.returncode == 0, run.stderr
    scores, curve, tars = protocol(setup['meta'], setup['embeddings'], setup['flipped'])
    [(label, target, cells)] = table_rows(run.stdout)
    assert (label, target, cells) == ('InsightFace_iter_1.ckpt', 'IJBC', percent(tars))
    np.testing.assert_allclose(np.load(str(out / 'scores.npy')), scores, rtol=0, atol=1e-5)
    with open(str(out / 'ijb.json')) as text:
        record = json.load(text)
    [result] = record['results']
    assert result['tar_at_far_percent'] == dict(zip(['1e-6', '1e-5', '1e-4', '1e-3', '1e-2',
                                                     '1e-1'], cells))
    np.testing.assert_allclose([result['tar_at_far'][k] for k in record['far_labels']], tars,
                               rtol=0, atol=1e-12)
    assert result['auc'] == pytest.approx(curve.auc, abs=1e-6)
    assert result['checkpoint'] == os.path.abspath(setup['prefixes'][1])
    assert result['sha256'] == ijb_cache_sha(setup['prefixes'][1] + '.index')
    assert (result['net_depth'], result['kind'], result['embeddings_from']) == (
        DEPTH, 'checkpoint', 'network')
    assert record['counts'] == {'images': 12, 'templates': 8, 'media': 10, 'pairs': 28,
                                'genuine': 4, 'impostor': 24}
    assert record['flags']['flip'] is True and record['flags']['norm_score'] is True
    assert record['flags']['net_input_size'] == list(NET_INPUT)
    assert record['table'] == run.stdout.strip().splitlines()
    assert '7fadd420' in record['reference']
    with open(str(out / 'roc.png'), 'rb') as png:
        assert png.read(8) == PNG_SIGNATURE
    assert 'IJBC at %s: 12 images, 8 templates, 10 media, 28 pairs (4 genuine, 24 impostor)' \
        % setup['root'] in run.stderr


def ijb_cache_sha(path):
    return safe_files.file_sha256(path)


def test_norm_score_false_normalises_each_image_first(setup, tmp_path, capsys):
    """--norm_score False: the scores of ijb_protocol with norm_score=False (N0), which
    differ from the default's (N1); --detector_score False likewise (D0)."""
    for extra, modes in ((['--norm_score', 'False'], {'norm_score': False}),
                         (['--detector_score', 'False', '--flip', 'False'],
                          {'detector_score': False, 'flip': False})):
        path = str(tmp_path / ('%s.npy' % '_'.join(sorted(modes))))
        assert eval_ijb.main(['--ckpt_file', setup['prefixes'][1], '--scores_npy', path]
                             + flags(setup, *extra)) == 0
        scores, _, tars = protocol(setup['meta'], setup['embeddings'], setup['flipped'],
                                   **modes)
        default = protocol(setup['meta'], setup['embeddings'], setup['flipped'])[0]
        np.testing.assert_allclose(np.load(path), scores, rtol=0, atol=1e-5)
        assert np.abs(scores - default).max() > 1e-2  # 1000x the tolerance above
        assert table_rows(capsys.readouterr().out)[0][2] == percent(tars)


def test_a_frozen_graph_and_an_onnx_model_give_the_checkpoints_row(setup, tmp_path, capsys):
    """One run, three rows: the checkpoint, its frozen graph, its ONNX model (TensorFlow
    2.x environment): same TAR cells, scores within float32 rounding."""
    files = ['export/frozen_model.pb'] + (['export/model.onnx'] if HAS_ONNX else [])
    scores_path = str(tmp_path / 'scores.npy')
    assert eval_ijb.main(['--ckpt_file', setup['base'] + os.sep, '--ckpt_index_list',
                          'ckpt/InsightFace_iter_1.ckpt'] + files
                         + ['--scores_npy', scores_path] + flags(setup)) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [label for label, _, _ in rows] == ['InsightFace_iter_1.ckpt'] + [
        os.path.basename(f) for f in files]
    assert all(cells == rows[0][2] for _, _, cells in rows)
    scores = np.load(scores_path)
    assert scores.shape == (1 + len(files), 28)
    assert np.abs(scores[1:] - scores[0]).max() < 1e-5


def test_the_features_cache_is_reused_whatever_the_protocol_flags(setup, tmp_path, caplog,
                                                                  capsys, monkeypatch):
    """First run: embeds and writes the cache. Second (other protocol flags): reuses it,
    logs so, never calls the network (embed_release would fail), same rows as a run
    without the cache. The cache records its checkpoint and image list."""
    caplog.set_level(logging.INFO)
    cache = str(tmp_path / 'features.npz')
    first = ['--ckpt_file', setup['prefixes'][1], '--features_cache', cache] + flags(setup)
    assert eval_ijb.main(first) == 0
    first_row = table_rows(capsys.readouterr().out)
    with np.load(cache) as npz:
        assert str(npz['model']) == os.path.abspath(setup['prefixes'][1])
        assert str(npz['model_sha256']) == ijb_cache_sha(setup['prefixes'][1] + '.index')
        assert str(npz['images_sha256']) == ijb_cache.images_sha256(setup['meta'])
        np.testing.assert_allclose(npz['embeddings'], setup['embeddings'], rtol=0,
                                   atol=1e-4 * np.abs(setup['embeddings']).max())
        np.testing.assert_allclose(npz['flipped_embeddings'], setup['flipped'], rtol=0,
                                   atol=1e-4 * np.abs(setup['flipped']).max())
    assert not any('reusing' in r.getMessage() for r in caplog.records)

    def no_network(*unused_args, **unused_kwargs):
        raise AssertionError('embedded although the cache holds the embeddings')
    monkeypatch.setattr(eval_ijb.ijb_embed, 'embed_release', no_network)
    caplog.clear()
    assert eval_ijb.main(first) == 0
    assert table_rows(capsys.readouterr().out) == first_row
    assert any(r.getMessage().startswith('reusing the embeddings of --features_cache %s'
                                         % cache) for r in caplog.records)
    assert eval_ijb.main(first + ['--norm_score', 'False', '--flip', 'False']) == 0
    _, _, tars = protocol(setup['meta'], setup['embeddings'], setup['flipped'],
                          norm_score=False, flip=False)
    assert table_rows(capsys.readouterr().out)[0][2] == percent(tars)


def test_a_cache_of_another_checkpoint_or_image_list_is_refused(setup, tmp_path, capsys):
    cache = str(tmp_path / 'features.npz')
    assert eval_ijb.main(['--ckpt_file', setup['prefixes'][1], '--features_cache', cache]
                         + flags(setup)) == 0
    capsys.readouterr()
    written = os.path.getmtime(cache)
    assert eval_ijb.main(['--ckpt_file', setup['prefixes'][2], '--features_cache', cache,
                          '--output_json', str(tmp_path / 'r.json')] + flags(setup)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert ('holds the embeddings of the checkpoint %s' % os.path.abspath(setup['prefixes'][1])
            in err and 'not of the checkpoint %s' % os.path.abspath(setup['prefixes'][2]) in err)
    other = str(tmp_path / 'IJBC')
    shutil.copytree(setup['root'], other)
    path = ijb_meta.meta_path(other, 'IJBC', ijb_meta.LANDMARKS)
    with open(path) as text:
        lines = text.read().splitlines()
    lines[3] = re.sub(r' (\d+)\.(\d+) ', r' \1.9\2 ', lines[3], count=1)  # one landmark moved
    with open(path, 'w') as out:
        out.write('\n'.join(lines) + '\n')
    assert eval_ijb.main(['--ckpt_file', setup['prefixes'][1], '--features_cache', cache]
                         + flags(setup)[2:] + ['--ijb_root', other]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert ('the IJBC image list of %s' % os.path.abspath(setup['root']) in err
            and 'not of the IJBC image list of %s' % os.path.abspath(other) in err)
    assert os.path.getmtime(cache) == written and not os.path.exists(str(tmp_path / 'r.json'))


# ---------------------------------------------------------------------------
# Refusals: one line, exit status 2, nothing written
# ---------------------------------------------------------------------------
def _break_image(root):
    with open(os.path.join(root, 'loose_crop', '7.jpg'), 'wb') as out:
        out.write(b'not a jpeg')


def _drop_file(root):
    os.remove(ijb_meta.meta_path(root, 'IJBC', ijb_meta.TEMPLATE_MEDIA))


def _edit_meta(which, line, text):
    def edit(root):
        path = ijb_meta.meta_path(root, 'IJBC', which)
        with open(path) as source:
            lines = source.read().splitlines()
        lines[line - 1] = text(lines[line - 1])
        with open(path, 'w') as out:
            out.write('\n'.join(lines) + '\n')
    return edit


def _genuine_only(root):
    path = ijb_meta.meta_path(root, 'IJBC', ijb_meta.PAIRS)
    with open(path) as source:
        lines = [line for line in source.read().splitlines() if line.endswith(' 1')]
    with open(path, 'w') as out:
        out.write('\n'.join(lines) + '\n')


def _existing_json(root):
    with open(os.path.join(os.path.dirname(root), 'out', 'ijb.json'), 'w') as out:
        out.write('{}')


# (name, how the release or the outputs are spoilt, extra flags, words of the message)
REFUSALS = [
    ('image does not decode', _break_image, [],
     r'ijbc_name_5pts_score\.txt:7: .*loose_crop/7\.jpg: not a readable image'),
    ('meta file missing', _drop_file, [], r'ijbc_face_tid_mid\.txt not found'),
    ('pair of an unknown template', _edit_meta(ijb_meta.PAIRS, 5, lambda l: '1 99 0'), [],
     r'ijbc_template_pair_label\.txt:5: template 99 is not in'),
    ('landmark fields', _edit_meta(ijb_meta.LANDMARKS, 2, lambda l: l + ' 0.5'), [],
     r'ijbc_name_5pts_score\.txt:2: found 13 fields, expected 12'),
    ('genuine pairs only', _genuine_only, [], r'4 genuine and 0 impostor pairs'),
    ('another crop size', None, ['--image_size', '96,96'], r'--image_size 96,96: IJB crops'),
    ('output exists', _existing_json, [], r'--output_json .*ijb\.json exists; pass --overwrite'),
    ('cache of several checkpoints', None,
     ['--ckpt_index_list', '1.ckpt', '2.ckpt', '--ckpt_file', 'CKPT_PREFIX'],
     r'--features_cache holds the embeddings of one checkpoint'),
    ('checkpoint flags with a frozen graph', None, ['--ckpt_file', 'FROZEN'],
     r'--net_input_size applies to checkpoints only'),
]


@pytest.mark.parametrize('case', REFUSALS, ids=[case[0] for case in REFUSALS])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(setup, tmp_path, capsys,
                                                                 case):
    name, spoil, extra, words = case
    root = str(tmp_path / 'IJBC')
    shutil.copytree(setup['root'], root)
    os.makedirs(str(tmp_path / 'out'))
    if spoil:
        spoil(root)
    before = sorted(os.listdir(str(tmp_path / 'out')))
    extra = [{'CKPT_PREFIX': os.path.join(setup['base'], 'ckpt', 'InsightFace_iter_'),
              'FROZEN': os.path.join(setup['export'], 'frozen_model.pb')}.get(w, w)
             for w in extra]
    out = str(tmp_path / 'out')
    argv = (['--ckpt_file', setup['prefixes'][1]] + flags(setup)[2:]
            + ['--ijb_root', root, '--output_json', os.path.join(out, 'ijb.json'),
               '--plot', os.path.join(out, 'roc.png'),
               '--scores_npy', os.path.join(out, 'scores.npy'),
               '--features_cache', os.path.join(out, 'features.npz')] + extra)
    assert eval_ijb.main(argv) == 2, name
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith('eval_ijb.py: error: ') and re.search(words, err), err
    assert sorted(os.listdir(out)) == before
    assert multiprocessing.active_children() == []


def test_onnx_is_refused_in_one_line_without_onnxruntime(setup, tmp_path, capsys):
    if ijb_models_onnxruntime() is not None:
        pytest.skip('onnxruntime is installed here (the TensorFlow 2.x environment)')
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'not checked: onnxruntime is missing')
    assert eval_ijb.main(['--ckpt_file', str(model), '--ijb_root', setup['root']]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'needs onnxruntime' in err, err


def ijb_models_onnxruntime():
    from evaluation import ijb_models
    return ijb_models.onnxruntime_module()


def test_interrupted_run_writes_nothing(setup, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the embedding (the network's second batch): status 130, one line,
    the workers gone, no output."""
    calls = []
    run = eval_ijb.ijb_models.Runners.open

    def interrupted_open(self, model):
        run_batch, batch_size = run(self, model)

        def interrupt(batch):
            calls.append(len(batch))
            if len(calls) == 2:
                raise KeyboardInterrupt()
            return run_batch(batch)
        return interrupt, batch_size
    monkeypatch.setattr(eval_ijb.ijb_models.Runners, 'open', interrupted_open)
    out = str(tmp_path / 'out')
    assert eval_ijb.main(['--ckpt_file', setup['prefixes'][1], '--output_json',
                          os.path.join(out, 'ijb.json'), '--features_cache',
                          os.path.join(out, 'features.npz')] + flags(setup)) == 130
    err = capsys.readouterr().err.strip()
    assert err == 'eval_ijb.py: error: interrupted; nothing written'
    assert len(calls) == 2 and os.listdir(out) == []
    assert multiprocessing.active_children() == []


def _alive_in_group(group):
    """Pids of the processes of a process group that are not zombies (Linux /proc)."""
    alive = []
    for entry in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % entry) as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except (IOError, OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != 'Z':
            alive.append(int(entry))
    return alive


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='reads the process table in /proc')
def test_a_kill_of_the_process_group_ends_every_process_and_writes_nothing(setup, tmp_path):
    """SIGTERM to the whole process group (what a job scheduler sends) while embedding:
    the workers die with it, the parent exits 130 with one line, nothing is written, no
    process is left (multiprocessing.Pool's terminate() hung here on a lock a dead worker
    held). The release repeats its 12 images 20 times, embedded one at a time, so that
    the signal comes mid-way."""
    root = str(tmp_path / 'IJBC')
    shutil.copytree(setup['root'], root)
    for which in (ijb_meta.LANDMARKS, ijb_meta.TEMPLATE_MEDIA):
        path = ijb_meta.meta_path(root, 'IJBC', which)
        with open(path) as source:
            lines = source.read()
        with open(path, 'w') as out:
            out.write(lines * 20)
    out = str(tmp_path / 'out')
    command = [sys.executable, 'eval_ijb.py', '--ckpt_file', setup['prefixes'][1],
               '--output_json', os.path.join(out, 'ijb.json')] + flags(setup)[2:] + [
                   '--ijb_root', root, '--batch_size', '1']
    run = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True,
                           start_new_session=True)
    try:
        lines = []
        while not any(' embedding 240 images' in line for line in lines):
            lines.append(run.stderr.readline())
            assert lines[-1], ''.join(lines)  # the run ended before embedding
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGTERM)
        rest = run.communicate(timeout=120)[1]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, ''.join(lines) + rest
    assert rest.strip().splitlines()[-1] == 'eval_ijb.py: error: interrupted; nothing written'
    assert os.listdir(out) == []
    deadline = time.time() + 10
    while _alive_in_group(run.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _alive_in_group(run.pid) == []


# ---------------------------------------------------------------------------
# The library pieces without a network
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('num_workers', [0, 2])
def test_embed_release_streams_in_order_with_mirrors_and_a_padded_last_batch(setup,
                                                                             num_workers):
    """A fake network (each crop's mean pixel per row band): the rows follow the 5pts
    file, the mirror is the crop flipped left-right, the padded rows are dropped."""
    meta, root = setup['meta'], setup['root']
    crops = np.stack([ijb_align.align(ijb_align.read_image(ijb_meta.image_file(root, n)), l)
                      for n, l in zip(meta.image_names, meta.landmarks)])
    sizes = []

    def fake_network(batch):
        sizes.append(len(batch))
        return np.concatenate([batch.mean(axis=(2, 3)), batch[:, :, :8].mean(axis=(1, 3))],
                              axis=1)
    with ijb_embed.CropPool(num_workers) as pool:
        embeddings, flipped = ijb_embed.embed_release(root, meta, 'meta.txt', fake_network, 5,
                                                      pool)
    assert sizes == [5] * 6 and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, fake_network(crops), rtol=1e-6)
    np.testing.assert_allclose(flipped, fake_network(crops[:, :, ::-1]), rtol=1e-6)
    assert multiprocessing.active_children() == []


def test_a_dead_worker_ends_the_embedding_with_its_name(setup):
    with ijb_embed.CropPool(2) as pool:
        os.kill(pool.pids[1], signal.SIGKILL)
        with pytest.raises(ijb_embed.WorkerError,
                           match=r'ijb-crops-1 \(pid \d+\) died \(exit code -9\)'):
            ijb_embed.embed_release(setup['root'], setup['meta'], 'meta.txt',
                                    lambda batch: np.zeros((len(batch), 4)), 5, pool)
    assert multiprocessing.active_children() == []


def test_roc_thinning_keeps_the_curve_on_a_fine_grid():
    rng = np.random.RandomState(0)
    labels = (rng.rand(200000) < 0.01).astype(int)
    curve = ijb_protocol.roc(labels, rng.standard_normal(200000) + 2 * labels)
    fpr, tpr = ijb_plot.thin(curve.fpr, curve.tpr, max_points=500)
    assert fpr.size <= 1001 and np.all(fpr > 0) and np.all(np.diff(fpr) >= 0)
    assert fpr[0] == ijb_plot.ZERO_FAR and tpr[0] == curve.tpr[curve.fpr == 0].max()
    for far in (1e-4, 1e-3, 1e-2, 1e-1):  # TAR read off the thinned curve barely moves
        below = tpr[fpr <= far].max()
        full = curve.tpr[curve.fpr <= far].max()
        grid_step = far * (10 ** (7.0 / 500) - 1)
        assert below <= full and curve.tpr[curve.fpr <= far - grid_step].max() <= below
    assert ijb_plot.render_roc('IJBC', [ijb_plot.RocCurve('x', curve.fpr, curve.tpr,
                                                          curve.auc)])[:8] == PNG_SIGNATURE
