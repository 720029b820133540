"""eval_ckpt_file.py and checkpoint_utils.py: table, JSON, plots, the original's names, refusals.

Checkpoints are made the way trainer.py makes them (training graph at depth 18
on 32x32 images, Momentum, global_step, tf.train.Saver with the original's
file names), so they carry the ArcFace weights and optimizer slots the CLI must
skip. The CLI runs as a real subprocess for the main path and one refusal;
the rest calls main() in-process (a TensorFlow start-up costs seconds).
"""
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import checkpoint_names

import eval_ckpt_file
from losses import objective
from nets import inference
from devices import runtime
import verification
from nets.checkpoint_names import CheckpointError
from data import eval_data_reader, image_ops
from data.synthetic import identities, render
from data.synthetic.jpeg_encoder import JpegEncoder

from conftest import PROJECT_ROOT  # noqa: E402
# Made with the original's nets/L_Resnet_E_IR.py (TF 1.15 + TensorLayer 1.7.4): see its header.
REFERENCE_DIR = os.path.join(PROJECT_ROOT, 'test', 'reference')
REFERENCE_WIDE_R50 = os.path.join(REFERENCE_DIR, 'insightface_tf_wide_r50_variables.tsv')
DEPTH = 18
IMAGE_SIZE = (32, 32)
BATCH = 8
ROW = re.compile(r'^(\S+)\s+(\S+)\s+(\d\.\d{5})\+-(\d\.\d{5})\s+(\d\.\d{5})\+-(\d\.\d{5})\s+'
                 r'(\d+\.\d{2})\s+(\d+\.\d{6})\s+(\d+)$')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


# ---------------------------------------------------------------------------
# Test data: checkpoints as the trainer writes them, and small .bin files.
# ---------------------------------------------------------------------------
def make_checkpoints(folder, steps, net_depth=DEPTH, image_size=IMAGE_SIZE, num_classes=10,
                     batch_size=2, bn_warmup=0):
    """Trains `max(steps)` Momentum steps on rendered faces, saving after each of `steps`.

    Args:
      bn_warmup: training-mode forward passes (batch-norm statistics updates
        only) before training, so the moving statistics approach those of
        the data and embeddings have a realistic scale (norm ~20, not ~1000).
    Returns:
      {step: checkpoint prefix} named InsightFace_iter_<step>.ckpt, as trainer.py.
    """
    faces = np.stack(synthetic_pairs((batch_size + 1) // 2, 11, image_size)[0][:batch_size])
    prefixes = {}
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        global_step = tf.train.get_or_create_global_step()
        labels = tf.constant(np.arange(batch_size) % num_classes, tf.int64)
        losses = objective.training_losses(image_ops.normalize(tf.constant(faces)), labels,
                                            net_depth, num_classes)
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            train_op = tf.train.MomentumOptimizer(0.01, 0.9).minimize(
                losses.total, global_step=global_step)
        saver = tf.train.Saver(max_to_keep=None)
        with tf.Session(config=runtime.session_config('cpu')) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(bn_warmup):
                sess.run(update_ops)
            for step in range(1, max(steps) + 1):
                sess.run(train_op)
                if step in steps:
                    prefixes[step] = saver.save(
                        sess, os.path.join(folder, 'InsightFace_iter_%d.ckpt' % step),
                        write_meta_graph=False)
    return prefixes


def make_backbone_checkpoint(folder, net_depth, image_size, step=0):
    """A freshly initialised backbone alone (no head, no slots), saved by tf.train.Saver."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        inference.inference_graph(net_depth, image_size)
        saver = tf.train.Saver()
        with tf.Session(config=runtime.session_config('cpu')) as sess:
            sess.run(tf.global_variables_initializer())
            return saver.save(sess, os.path.join(folder, 'InsightFace_iter_%d.ckpt' % step),
                              write_meta_graph=False)


def write_bin(path, images_bgr, issame):
    """An insightface .bin: pickle protocol 2 of (JPEG bytes list, bool list)."""
    encoder = JpegEncoder(quality=95)
    try:
        jpegs = encoder.encode(np.stack(images_bgr))
    finally:
        encoder.close()
    with open(path, 'wb') as out:
        pickle.dump(([bytes(j) for j in jpegs], [bool(s) for s in issame]), out, protocol=2)


def synthetic_pairs(num_pairs, seed, image_size=IMAGE_SIZE):
    """LFW-ordered pairs of rendered faces: images (BGR uint8 list), issame list."""
    images, issame = [], []
    for pair in range(num_pairs):
        same = pair % 2 == 0
        first, second = pair, (pair if same else pair + 1000)
        for index, (identity, shot) in enumerate(((first, 0), (second, 1))):
            params = identities.sample_identity(
                identities.identity_rng(seed, identities.VAL_STREAM, identity))
            images.append(render.render_face(
                params, identities.image_rng(seed, identities.VAL_STREAM, identity,
                                             shot + index), image_size))
        issame.append(same)
    return images, issame


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Two checkpoints (steps 1, 2) in ckpt/, lfw.bin (20 pairs) and cfp_fp.bin (30) in db/."""
    root = tmp_path_factory.mktemp('eval')
    ckpt_dir, db_dir = str(root / 'ckpt'), str(root / 'db')
    os.makedirs(ckpt_dir)
    os.makedirs(db_dir)
    prefixes = make_checkpoints(ckpt_dir, (1, 2))
    for name, pairs, seed in (('lfw', 20, 1), ('cfp_fp', 30, 2)):
        write_bin(os.path.join(db_dir, name + '.bin'), *synthetic_pairs(pairs, seed))
    return {'ckpt_dir': ckpt_dir, 'db': db_dir, 'prefixes': prefixes, 'root': str(root)}


def eval_flags(data, *extra):
    return ['--net_depth', str(DEPTH), '--image_size', '%d,%d' % IMAGE_SIZE,
            '--batch_size', str(BATCH), '--eval_db_path', data['db'],
            '--device', 'cpu'] + list(extra)


def run_cli(args, timeout=300):
    return subprocess.run([sys.executable, 'eval_ckpt_file.py'] + args, cwd=PROJECT_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def direct_results(prefixes, bin_paths):
    """verification.run_verification in this process, on the same checkpoints and .bins.

    Returns:
      {(prefix, bin_path): VerificationResult}.
    """
    sets = [(path, eval_data_reader.load_bin(path, IMAGE_SIZE)) for path in bin_paths]
    results = {}
    with tf.Graph().as_default():
        images_ph, embeddings = inference.inference_graph(DEPTH, IMAGE_SIZE, BATCH)
        saver = tf.train.Saver(var_list=checkpoint_names.backbone_variables(DEPTH))
        with tf.Session(config=runtime.session_config('cpu')) as sess:
            for prefix in prefixes:
                saver.restore(sess, prefix)
                for path, (images, issame) in sets:
                    results[(prefix, path)] = verification.run_verification(
                        sess, images_ph, embeddings, images, issame, BATCH)
    return results


def table_rows(stdout):
    """{(checkpoint, dataset): match} of the printed table; checks the header."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines[0].split() == ['checkpoint', 'dataset', 'accuracy', 'VAL@FAR=1e-3',
                                'threshold', 'XNorm', 'pairs'], stdout
    rows = {}
    for line in lines[1:]:
        match = ROW.match(line)
        assert match, 'not a table row: %r' % line
        rows[(match.group(1), match.group(2))] = match
    return rows


def assert_same_result(record, result):
    """JSON record == VerificationResult, exactly."""
    for field in ('accuracy', 'accuracy_std', 'val', 'val_std', 'far', 'threshold', 'xnorm',
                  'nrof_pairs'):
        assert record[field] == getattr(result, field), field
    for field in ('tpr', 'fpr', 'fold_thresholds'):
        assert record[field] == np.asarray(getattr(result, field)).tolist(), field


# ---------------------------------------------------------------------------
# The CLI end to end.
# ---------------------------------------------------------------------------
def test_index_list_table_json_log_lines_and_plots(data, tmp_path):
    out_json = str(tmp_path / 'results' / 'eval.json')
    plot_dir = str(tmp_path / 'plots')
    proc = run_cli(eval_flags(
        data, '--ckpt_file', os.path.join(data['ckpt_dir'], 'InsightFace_iter_'),
        '--ckpt_index_list', '1.ckpt', '2.ckpt', '--eval_datasets', 'lfw', 'cfp_fp',
        '--output_json', out_json, '--plot_dir', plot_dir))
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    rows = table_rows(proc.stdout)
    assert sorted(rows) == sorted((name, dataset) for name in ('InsightFace_iter_1.ckpt',
                                                               'InsightFace_iter_2.ckpt')
                                  for dataset in ('lfw', 'cfp_fp'))
    with open(out_json) as json_file:
        report = json.load(json_file)
    assert report['net_depth'] == DEPTH and report['image_size'] == list(IMAGE_SIZE)
    assert report['roc_thresholds'] == verification.ACCURACY_THRESHOLDS.tolist()
    records = {(os.path.basename(r['checkpoint']), r['dataset']): r for r in report['results']}
    assert sorted(records) == sorted(rows)
    bin_path = {name: os.path.join(data['db'], name + '.bin') for name in ('lfw', 'cfp_fp')}
    direct = direct_results([data['prefixes'][1], data['prefixes'][2]],
                            [bin_path['lfw'], bin_path['cfp_fp']])
    for step in (1, 2):
        for dataset, pairs in (('lfw', 20), ('cfp_fp', 30)):
            key = ('InsightFace_iter_%d.ckpt' % step, dataset)
            record, row = records[key], rows[key]
            result = direct[(data['prefixes'][step], bin_path[dataset])]
            assert_same_result(record, result)
            assert record['step'] == step and record['nrof_pairs'] == pairs
            assert record['checkpoint'] == data['prefixes'][step]
            assert row.group(3, 4) == ('%.5f' % result.accuracy, '%.5f' % result.accuracy_std)
            assert row.group(5, 6) == ('%.5f' % result.val, '%.5f' % result.val_std)
            assert row.group(7, 8, 9) == ('%.2f' % result.threshold, '%.6f' % result.xnorm,
                                          str(pairs))
            assert '[%s][%d]XNorm: %.6f' % (dataset, step, result.xnorm) in proc.stderr
            assert ('[%s][%d]Accuracy-Flip: %1.5f+-%1.5f'
                    % (dataset, step, result.accuracy, result.accuracy_std)) in proc.stderr
    # The two steps differ, so the table really restored each checkpoint.
    assert records[('InsightFace_iter_1.ckpt', 'lfw')]['xnorm'] != \
        records[('InsightFace_iter_2.ckpt', 'lfw')]['xnorm']
    for dataset in ('lfw', 'cfp_fp'):
        with open(os.path.join(plot_dir, 'roc_%s.png' % dataset), 'rb') as png:
            content = png.read()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 10000
    # Each output and the record of it (for --overwrite), and no temporary files.
    assert sorted(os.listdir(plot_dir)) == ['.roc_cfp_fp.png.written.json',
                                            '.roc_lfw.png.written.json',
                                            'roc_cfp_fp.png', 'roc_lfw.png']
    assert sorted(os.listdir(os.path.dirname(out_json))) == ['.eval.json.written.json',
                                                             'eval.json']


def test_folder_means_latest_checkpoint(data, tmp_path, capsys):
    out_json = str(tmp_path / 'latest.json')
    code = eval_ckpt_file.main(eval_flags(data, '--ckpt_file', data['ckpt_dir'],
                                          '--eval_datasets', 'lfw', '--output_json', out_json))
    assert code == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [('InsightFace_iter_2.ckpt', 'lfw')]
    with open(out_json) as json_file:
        (record,) = json.load(json_file)['results']
    assert record['checkpoint'] == data['prefixes'][2]
    lfw = os.path.join(data['db'], 'lfw.bin')
    assert_same_result(record, direct_results([data['prefixes'][2]], [lfw])[
        (data['prefixes'][2], lfw)])


def test_every_checkpoint_is_named_by_its_full_path(data, tmp_path, monkeypatch, caplog):
    """A relative --ckpt_file: the log and the JSON name each checkpoint evaluated by its
    full path, so a result read elsewhere still says which file it came from."""
    monkeypatch.chdir(data['root'])
    out_json = str(tmp_path / 'eval.json')
    with caplog.at_level(logging.INFO):
        code = eval_ckpt_file.main(eval_flags(
            data, '--ckpt_file', os.path.join('ckpt', 'InsightFace_iter_'),
            '--ckpt_index_list', '1.ckpt', '2.ckpt', '--eval_datasets', 'lfw',
            '--output_json', out_json))
    assert code == 0
    for step in (1, 2):
        assert os.path.isabs(data['prefixes'][step])
        assert ('evaluating %s (depth %d, standard, batch norm)' % (data['prefixes'][step], DEPTH)
                in caplog.text), caplog.text
    with open(out_json) as json_file:
        records = json.load(json_file)['results']
    assert [r['checkpoint'] for r in records] == [data['prefixes'][1], data['prefixes'][2]]


def test_error_report_follows_each_row(data, capsys):
    code = eval_ckpt_file.main(eval_flags(data, '--ckpt_file', data['ckpt_dir'],
                                          '--eval_datasets', 'lfw', 'cfp_fp',
                                          '--error_report', 'True'))
    assert code == 0
    out = capsys.readouterr().out
    report_lines = [line for line in out.splitlines() if line.startswith('[')]
    rows = table_rows('\n'.join(line for line in out.splitlines() if not line.startswith('[')))
    for dataset, pairs in (('lfw', 20), ('cfp_fp', 30)):
        threshold = rows[('InsightFace_iter_2.ckpt', dataset)].group(7)
        heads = [line for line in report_lines if line.startswith(
            '[%s] errors at threshold %s: ' % (dataset, threshold))]
        assert len(heads) == 1 and ' of %d pairs (' % pairs in heads[0], out


def test_real_orl_faces_at_112(shared_data, tmp_path, capsys):
    """20 real pairs of orl_val.bin at 112x112, JPEGs as stored, through main().

    A subset, interleaving its first 10 same and first 10 different pairs so
    every fold holds one of each: the whole set (900 images, embedded twice
    for the flip) takes about a minute at depth 18 on two cores. The numbers
    are compared with an in-process run in the 32x32 tests.
    """
    encoded, issame = eval_data_reader.read_bin(os.path.join(shared_data, 'orl_faces',
                                                             'orl_val.bin'))
    same, different = np.flatnonzero(issame)[:10], np.flatnonzero(~issame)[:10]
    pairs = [int(p) for both in zip(same, different) for p in both]
    db = tmp_path / 'db'
    db.mkdir()
    with open(str(db / 'orl20.bin'), 'wb') as out:
        pickle.dump(([encoded[2 * p + i] for p in pairs for i in (0, 1)],
                     [bool(issame[p]) for p in pairs]), out, protocol=2)
    # Training at 112x112 costs seconds; an initialised backbone is enough here.
    prefix = make_backbone_checkpoint(str(tmp_path), DEPTH, (112, 112), step=5)
    out_json = str(tmp_path / 'orl.json')
    assert eval_ckpt_file.main(['--ckpt_file', prefix, '--net_depth', str(DEPTH),
                                '--batch_size', '20', '--eval_db_path', str(db),
                                '--eval_datasets', 'orl20', '--device', 'cpu',
                                '--output_json', out_json]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [('InsightFace_iter_5.ckpt', 'orl20')]
    with open(out_json) as json_file:
        (record,) = json.load(json_file)['results']
    assert record['nrof_pairs'] == 20 and record['step'] == 5
    assert 0.0 <= record['accuracy'] <= 1.0 and record['xnorm'] > 0.0
    row = rows[('InsightFace_iter_5.ckpt', 'orl20')]
    assert row.group(3, 8, 9) == ('%.5f' % record['accuracy'], '%.6f' % record['xnorm'], '20')


# ---------------------------------------------------------------------------
# Refusals: one line naming the file and what was expected, non-zero exit.
# ---------------------------------------------------------------------------
def errors_of(stderr):
    """The CLI's error lines; also checks that no exception escaped."""
    assert 'Traceback' not in stderr
    assert not re.search(r'^\w+(Error|Exception)\b', stderr, re.M), stderr
    return [line for line in stderr.splitlines() if line.startswith('eval_ckpt_file.py: ')]


def refusal(capsys, argv, code=2):
    assert eval_ckpt_file.main(argv) == code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines()
              if line.startswith('eval_ckpt_file.py: error: ')]
    assert len(errors) == 1, captured.err
    assert 'Traceback' not in captured.err and not captured.out
    return errors[0]


def test_missing_checkpoint_as_subprocess(data):
    missing = os.path.join(data['ckpt_dir'], 'InsightFace_iter_7.ckpt')
    proc = run_cli(eval_flags(data, '--ckpt_file', missing))
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr and not proc.stdout
    assert errors_of(proc.stderr) == [
        'eval_ckpt_file.py: error: checkpoint %s not found: expected the files %s.index and '
        '%s.data-*' % (missing, missing, missing)], proc.stderr


def test_missing_checkpoint_in_index_list(data, capsys):
    err = refusal(capsys, eval_flags(data, '--ckpt_file', os.path.join(data['ckpt_dir'],
                                                                       'InsightFace_iter_'),
                                     '--ckpt_index_list', '1.ckpt', '3.ckpt'))
    assert 'InsightFace_iter_3.ckpt not found' in err


def test_empty_folder(data, tmp_path, capsys):
    err = refusal(capsys, eval_flags(data, '--ckpt_file', str(tmp_path)))
    assert 'no checkpoint in folder %s' % tmp_path in err


def test_wrong_depth(data, capsys):
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--net_depth', '34'))
    assert err.endswith('checkpoint %s holds a depth-18 network (resnet_v1_18/...); '
                        '--net_depth 34 expected resnet_v1_34' % data['prefixes'][1])


@pytest.mark.parametrize('record,expected', [
    ('{"net_depth": 18', r'network\.json: cannot read it \(.*\); it records the network of '
                         r'the checkpoints beside it$'),
    ('{"net_depth": 18, "net_width": "standard", "input_size": [32, 32], '
     '"embedding_size": 512}',
     r'network\.json: expected the fields net_depth, net_width, norm, input_size, '
     r'embedding_size; norm missing$'),
    ('{"net_depth": 18, "net_width": "standard", "norm": "group", "input_size": [32, 32], '
     '"embedding_size": 512}',
     r'InsightFace_iter_1\.ckpt holds a depth-18 standard batch-norm network but .*network\.json '
     r'beside it records depth 18, standard, group-norm: the record belongs to another run; '
     r'move the record or the checkpoint$'),
])
def test_a_network_record_that_does_not_fit_is_refused(data, tmp_path, capsys, record,
                                                         expected):
    """network.json beside a checkpoint: unreadable, incomplete, or another network than
    the names say: one line naming the file. (A record that fits: test_train_nets.)"""
    folder = tmp_path / 'ckpt'
    folder.mkdir()
    for path in tf.io.gfile.glob(data['prefixes'][1] + '.*'):
        shutil.copy(path, str(folder))
    (folder / 'network.json').write_text(record)
    err = refusal(capsys, eval_flags(data, '--ckpt_file', str(folder)))
    assert re.search(expected, err), err


def test_network_input_size_comes_from_the_record():
    """The recorded size wins over --image_size; a flag must agree; images smaller than
    it are refused; without a record the flag decides, as before."""
    recorded = checkpoint_names.Network(18, 'standard', 'batch', (16, 16))
    size = checkpoint_names.network_input_size
    assert size('c', recorded, (32, 32), None) == (16, 16)
    assert size('c', recorded, (16, 16), None) is None
    assert size('c', recorded, (32, 32), (16, 16)) == (16, 16)
    with pytest.raises(CheckpointError, match=r'^--net_input_size 12,12: checkpoint c was '
                                              r'trained at 16,16 \(network\.json\); drop the '
                                              r'flag or pass --net_input_size 16,16$'):
        size('c', recorded, (32, 32), (12, 12))
    with pytest.raises(CheckpointError, match=r'^--image_size 8,8: checkpoint c was trained '
                                              r'at 16,16'):
        size('c', recorded, (8, 8), None)
    unknown = checkpoint_names.Network(18, 'standard')
    assert size('c', unknown, (32, 32), None) is None
    assert size('c', unknown, (32, 32), (12, 12)) == (12, 12)


def test_wrong_image_size(data, capsys):
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--image_size', '64,64'))
    assert data['prefixes'][1] in err
    assert 'resnet_v1_18/E_DenseLayer/W has shape [2048, 512]' in err
    assert 'expects [8192, 512]' in err
    assert 'every --image_size or --net_input_size from 17,17 to 32,32 gives' in err


def test_missing_bin(data, capsys):
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--eval_datasets', 'lfw', 'agedb_30'))
    assert os.path.join(data['db'], 'agedb_30.bin') in err and 'not found' in err


def test_truncated_bin(data, tmp_path, capsys):
    with open(os.path.join(data['db'], 'lfw.bin'), 'rb') as whole:
        (tmp_path / 'lfw.bin').write_bytes(whole.read()[:5000])
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--eval_db_path', str(tmp_path)))
    assert err.startswith('eval_ckpt_file.py: error: %s: truncated' % (tmp_path / 'lfw.bin'))


def test_bin_of_another_image_size(data, tmp_path, capsys):
    images, issame = synthetic_pairs(10, seed=4, image_size=(48, 48))
    write_bin(str(tmp_path / 'lfw.bin'), images, issame)
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--eval_db_path', str(tmp_path)))
    assert err.endswith('%s: image 0 is 48x48, expected 32x32 (height x width)'
                        % (tmp_path / 'lfw.bin'))


def test_too_few_pairs(data, tmp_path, capsys):
    images, issame = synthetic_pairs(4, seed=5)
    write_bin(str(tmp_path / 'tiny.bin'), images, issame)
    err = refusal(capsys, eval_flags(data, '--ckpt_file', data['prefixes'][1],
                                     '--eval_db_path', str(tmp_path), '--eval_datasets', 'tiny'))
    assert str(tmp_path / 'tiny.bin') in err and 'at least 10' in err


def test_truncated_checkpoint_data_is_a_runtime_failure(data, tmp_path, capsys):
    prefix = str(tmp_path / 'InsightFace_iter_1.ckpt')
    source = data['prefixes'][1]
    with open(source + '.index', 'rb') as index:
        (tmp_path / 'InsightFace_iter_1.ckpt.index').write_bytes(index.read())
    with open(source + '.data-00000-of-00001', 'rb') as shard:
        (tmp_path / 'InsightFace_iter_1.ckpt.data-00000-of-00001').write_bytes(
            shard.read()[:100000])
    err = refusal(capsys, eval_flags(data, '--ckpt_file', prefix, '--eval_datasets', 'lfw'),
                  code=1)
    assert err == ('eval_ckpt_file.py: error: cannot restore checkpoint %s: Read less bytes '
                   'than requested (OutOfRangeError); is it complete?' % prefix)


@pytest.mark.parametrize('flag', ['--output_json', '--plot_dir'])
def test_earlier_results_are_kept_unless_overwrite(data, tmp_path, capsys, flag):
    """An earlier evaluation's file is refused before anything runs; --overwrite replaces
    it, but never a file the tool did not write."""
    value = str(tmp_path / 'eval.json') if flag == '--output_json' else str(tmp_path)
    output = value if flag == '--output_json' else str(tmp_path / 'roc_lfw.png')
    argv = eval_flags(data, '--ckpt_file', data['prefixes'][1], '--eval_datasets', 'lfw',
                      flag, value)
    assert eval_ckpt_file.main(argv) == 0
    capsys.readouterr()
    with open(output, 'rb') as written:
        earlier = written.read()
    err = refusal(capsys, argv)
    assert err == ('eval_ckpt_file.py: error: %s %s exists; pass --overwrite to replace it'
                   % (flag, output))
    with open(output, 'rb') as kept:
        assert kept.read() == earlier
    assert eval_ckpt_file.main(argv + ['--overwrite']) == 0
    capsys.readouterr()
    with open(output, 'wb') as mine:
        mine.write(b'my own notes')
    err = refusal(capsys, argv + ['--overwrite'])
    assert err.startswith('eval_ckpt_file.py: error: %s %s has changed since eval_ckpt_file.py '
                          'wrote it' % (flag, output)), err
    with open(output, 'rb') as kept:
        assert kept.read() == b'my own notes'


def test_corrupt_checkpoint_index(data, tmp_path, capsys):
    (tmp_path / 'x.ckpt.index').write_bytes(b'not a checkpoint index')
    err = refusal(capsys, eval_flags(data, '--ckpt_file', str(tmp_path / 'x.ckpt')))
    assert 'cannot read checkpoint %s' % (tmp_path / 'x.ckpt') in err


def test_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_ckpt_file.main(['--ckpt_file', 'x', '--batch_size', '0'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == ("eval_ckpt_file.py: error: argument --batch_size: expected a positive "
                   "integer, got '0'\n")


def test_help_documents_every_flag():
    help_text = eval_ckpt_file.get_parser().format_help()
    for flag in ('--ckpt_file', '--ckpt_index_list', '--eval_db_path', '--eval_datasets',
                 '--net_depth', '--batch_size', '--image_size', '--output_json', '--plot_dir',
                 '--device'):
        assert flag in help_text


# ---------------------------------------------------------------------------
# checkpoint_utils on its own.
# ---------------------------------------------------------------------------
def test_resolve_checkpoint_forms(data, tmp_path):
    prefix = data['prefixes'][1]
    assert checkpoint_names.resolve_checkpoint(prefix) == prefix
    assert checkpoint_names.resolve_checkpoint(prefix + '.index') == prefix
    assert checkpoint_names.resolve_checkpoint(prefix + '.data-00000-of-00001') == prefix
    assert checkpoint_names.resolve_checkpoint(data['ckpt_dir']) == data['prefixes'][2]
    # Without a `checkpoint` file (copied by hand): the newest *.index.
    for step, age in ((1, 0), (2, -100)):
        source = data['prefixes'][step]
        for suffix in ('.index', '.data-00000-of-00001'):
            target = str(tmp_path / (os.path.basename(source) + suffix))
            with open(source + suffix, 'rb') as src, open(target, 'wb') as dst:
                dst.write(src.read())
            stat = os.stat(target)
            os.utime(target, (stat.st_atime, stat.st_mtime + age))
    assert checkpoint_names.resolve_checkpoint(str(tmp_path)) == \
        str(tmp_path / 'InsightFace_iter_1.ckpt')
    # A stale `checkpoint` file naming a deleted checkpoint: fall back as well.
    (tmp_path / 'checkpoint').write_text(u'model_checkpoint_path: "InsightFace_iter_9.ckpt"\n')
    assert checkpoint_names.resolve_checkpoint(str(tmp_path)) == \
        str(tmp_path / 'InsightFace_iter_1.ckpt')


def test_checkpoint_step():
    assert checkpoint_names.checkpoint_step('out/ckpt/InsightFace_iter_2000.ckpt') == 2000
    assert checkpoint_names.checkpoint_step('out/x7/model.ckpt-350') == 350
    assert checkpoint_names.checkpoint_step('out/ckpt/best.ckpt') == 0


def _names(depth, units, last_channels=512):
    names = {'resnet_v1_%d/conv1/W_conv2d' % depth: [3, 3, 3, 64],
             'resnet_v1_%d/E_BN1/beta' % depth: [last_channels]}
    for block, count in enumerate(units):
        for unit in range(count):
            names['resnet_v1_%d/block%d/unit_%d/bottleneck_v1/conv1/W_conv2d'
                  % (depth, block + 1, unit + 1)] = [3, 3, 64, 64]
    return names


def test_network_detection_by_names():
    detect = checkpoint_names.detect_network
    assert detect('c', _names(18, (2, 2, 2, 2)), 18)[:2] == (18, 'standard')
    assert detect('c', _names(18, (2, 2, 2, 2)))[:2] == (18, 'standard')  # no --net_depth
    assert detect('c', _names(50, (3, 4, 14, 3), 2048))[:2] == (50, 'wide')
    assert detect('c', _names(101, (3, 13, 30, 3), 2048))[:2] == (101, 'wide')
    with pytest.raises(CheckpointError, match=r'^checkpoint c: resnet_v1_18 has \(2, 3, 2, 2\) '
                                              r'units per block; the standard variant has '
                                              r'\(2, 2, 2, 2\) at depth 18$'):
        detect('c', _names(18, (2, 3, 2, 2)), 18)
    with pytest.raises(CheckpointError, match=r'the wide variant has no depth 18$'):
        detect('c', _names(18, (2, 2, 2, 2), 2048))
    with pytest.raises(CheckpointError, match=r'E_BN1/beta has shape \[1024\]; expected '
                                              r'512 or 2048 channels'):
        detect('c', _names(18, (2, 2, 2, 2), 1024))
    with pytest.raises(CheckpointError, match=r'holds no L_Resnet_E_IR backbone'):
        detect('c', {'global_step': []}, 18)
    with pytest.raises(CheckpointError, match=r'holds a depth-100 network \(resnet_v1_100/\.\.\.'
                                              r'\); --net_depth 50 expected resnet_v1_50$'):
        detect('c', _names(100, (3, 13, 30, 3)), 50)
    both = dict(_names(18, (2, 2, 2, 2)), **_names(50, (3, 4, 14, 3)))
    with pytest.raises(CheckpointError, match=r'choose one with --net_depth$'):
        detect('c', both)
    assert detect('c', both, 50)[:2] == (50, 'standard')
    # The normalisation, from the stem's norm: group norm's scale, renorm's statistics.
    group = dict(_names(50, (3, 4, 14, 3)), **{'resnet_v1_50/group_norm_0/scale': [1, 64, 1, 1],
                                                'resnet_v1_50/E_GN_0/offset': [1, 2048, 1, 1]})
    del group['resnet_v1_50/E_BN1/beta']
    assert detect('c', group) == (50, 'wide', 'group', None)
    assert detect('c', group, norm='group') == (50, 'wide', 'group', None)
    renorm = dict(_names(18, (2, 2, 2, 2)), **{'resnet_v1_18/bn0/renorm_mean': [64]})
    assert detect('c', renorm) == (18, 'standard', 'batch_renorm', None)
    with pytest.raises(CheckpointError, match=r'^--norm batch: checkpoint c holds a '
                                              r'batch_renorm-norm network \(resnet_v1_18/bn0/'
                                              r'\.\.\.\); drop --norm or pass --norm '
                                              r'batch_renorm$'):
        detect('c', renorm, norm='batch')


def test_missing_backbone_variable_is_named():
    with tf.Graph().as_default():
        inference.inference_graph(DEPTH, IMAGE_SIZE)
        variables = checkpoint_names.backbone_variables(DEPTH)
        names = dict((v.op.name, v.shape.as_list()) for v in variables)
        del names['resnet_v1_18/E_BN2/moving_variance']
        with pytest.raises(CheckpointError, match=r'^checkpoint c lacks 1 of the %d variables of '
                                                  r'resnet_v1_18, e\.g\. resnet_v1_18/E_BN2/'
                                                  r'moving_variance$' % len(variables)):
            checkpoint_names.check_shapes('c', names, variables,
                                          checkpoint_names.Network(DEPTH, 'standard'))


def read_tsv(path):
    """{name: shape list} of a reference variable list."""
    variables = {}
    with open(path) as tsv:
        for line in tsv:
            if line.strip() and not line.startswith('#'):
                name, shape = line.split('\t')[:2]
                variables[name] = [int(d) for d in shape.split(',')]
    return variables


def test_original_insightface_tf_checkpoint_names_restore(shared_reference):
    """Every variable the CLI restores at depth 50 is in the original's r50 checkpoint.

    A real r50 checkpoint is ~250 MB (dense and ArcFace weights), so the check
    runs on its variable list: the names and shapes the CLI would restore, and
    the validation the CLI applies to a checkpoint's list.
    """
    original = read_tsv(os.path.join(shared_reference, 'insightface_tf_r50_variables.tsv'))
    with tf.Graph().as_default():
        inference.inference_graph(50, (112, 112), BATCH)
        restored = checkpoint_names.backbone_variables(50)
        assert len(restored) == len(tf.global_variables())
        for var in restored:
            assert original.get(var.op.name) == var.shape.as_list(), var.op.name
        # The original's extra variable (the ArcFace head) is not restored ...
        assert set(original) - set(v.op.name for v in restored) == \
            {'arcface_loss/embedding_weights'}
        # ... and its variable list passes the CLI's checks.
        network = checkpoint_names.detect_network('r50', original)
        assert network == (50, 'standard', 'batch', None)
        checkpoint_names.check_shapes('r50', original, restored, network)


@pytest.mark.parametrize('reference,norm,size', [
    (REFERENCE_WIDE_R50, 'batch', 112),
    # L_Resnet_E_IR_GBN.py (model A) and _RBN.py, listed on 64x64 inputs
    (os.path.join(REFERENCE_DIR, 'insightface_tf_gbn_r50_variables.tsv'), 'group', 64),
    (os.path.join(REFERENCE_DIR, 'insightface_tf_rbn_r50_variables.tsv'), 'batch_renorm', 64)])
def test_original_wide_checkpoint_names_restore(reference, norm, size):
    """The original's 4x-wide L_Resnet_E_IR.py (its eval_ckpt_file.py, models B/C), and
    its group-norm and batch-renorm files: detected from the variable list, and every
    variable the CLI restores is in it."""
    original = read_tsv(reference)
    network = checkpoint_names.detect_network('wide50', original)
    assert network == (50, 'wide', norm, None)
    with tf.Graph().as_default():
        inference.inference_graph(50, (size, size), BATCH, variant=network.variant,
                                  norm=network.norm)
        restored = checkpoint_names.backbone_variables(50)
        # Not restored: the margin head, and batch renorm's training-only statistics.
        assert set(original) - set(v.op.name for v in restored) == \
            {'arcface_loss/embedding_weights'} | set(
                n for n in original if n.rsplit('/', 1)[-1] in
                ('moving_stddev', 'renorm_mean', 'renorm_stddev'))
        checkpoint_names.check_shapes('wide50', original, restored, network)
