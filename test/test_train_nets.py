"""train_nets.py end to end on a tiny synthetic dataset: outputs, resume, kill, failures."""
import glob
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import eval_ckpt_file
import export_model
from devices import npu_options
from nets import inference
import train_nets

from conftest import PROJECT_ROOT  # noqa: E402
IMAGE_SIZE = (32, 32)


def flags(data, out, *extra):
    return ['--tfrecords_file_path', data['records'], '--eval_db_path', data['raw'],
            '--eval_datasets', 'lfw', '--image_size', '%d,%d' % IMAGE_SIZE,
            '--net_depth', '18', '--batch_size', '4', '--eval_batch_size', '8',
            '--buffer_size', '16', '--ckpt_path', os.path.join(out, 'ckpt'),
            '--summary_path', os.path.join(out, 'summary'),
            '--log_file_path', os.path.join(out, 'logs'), '--lr_values', '0.01,0.001',
            '--lr_steps', '1000', '--show_info_interval', '1', '--device', 'cpu'] + list(extra)


def run_training(args, timeout=240):
    # As a user runs it: without the test runner's TF_CPP_MIN_LOG_LEVEL.
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run([sys.executable, 'train_nets.py'] + args, cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout)


def start_training(args):
    return subprocess.Popen([sys.executable, 'train_nets.py'] + args, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)


def checkpoint_step(ckpt_dir):
    latest = tf.train.latest_checkpoint(ckpt_dir)
    return None if latest is None else tf.train.load_variable(latest, 'global_step')


def test_trains_validates_checkpoints_and_resumes(tiny_data, tmp_path):
    out = str(tmp_path)
    first = run_training(flags(tiny_data, out, '--max_steps', '4', '--validate_interval', '2',
                               '--ckpt_interval', '3', '--summary_interval', '2'))
    assert first.returncode == 0, first.stdout
    log = first.stdout
    assert re.search(r'epoch 0, total_step 1, total loss is [\d.]+ , inference loss is', log)
    # The original's fields, then the learning rate, then the time so far and the time left.
    lines = re.findall(r'^\d\d:\d\d:\d\d (epoch \d+, total_step (\d), .*)$', log, re.M)
    assert [int(step) for _, step in lines] == [1, 2, 3, 4], log
    for line, step in lines:
        assert re.search(r', lr 0\.01, (\d+s|\d+m\d\ds) elapsed, (\d+s|\d+m\d\ds|\?) left$',
                         line), line
    assert lines[-1][0].endswith(' 0s left')
    # Only the project's lines: every one from the project's logger (time first) or the
    # trainer's own summary, none of TensorFlow's.
    assert not [line for line in log.splitlines() if not re.match(r'\d\d:\d\d:\d\d ', line)], log
    assert re.search(r'\[lfw\]\[2\]XNorm: \d+\.\d{6}', log)
    assert re.search(r'\[lfw\]\[4\]Accuracy-Flip: \d\.\d{5}\+-\d\.\d{5}', log)
    assert 'test accuracy is:' in log
    # The log file holds the same lines as the console.
    log_files = glob.glob(os.path.join(out, 'logs', 'train_*.log'))
    assert len(log_files) == 1 and '[lfw][4]XNorm' in open(log_files[0]).read()
    ckpts = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, 'ckpt', '*.index')))
    assert ckpts == ['InsightFace_iter_3.ckpt.index', 'InsightFace_iter_4.ckpt.index']
    assert checkpoint_step(os.path.join(out, 'ckpt')) == 4
    assert glob.glob(os.path.join(out, 'ckpt', 'best', 'InsightFace_iter_*.ckpt.index'))
    check_summaries(os.path.join(out, 'summary'), os.path.join(out, 'ckpt'), steps=(2, 4))

    latest = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    momentum_before = tf.train.load_variable(
        latest, 'arcface_loss/embedding_weights/Momentum')
    second = run_training(flags(tiny_data, out, '--max_steps', '6', '--validate_interval', '100'))
    assert second.returncode == 0, second.stdout
    assert 'resumed from %s' % latest in second.stdout
    assert re.search(r'epoch \d+, total_step 5,', second.stdout)
    assert not re.search(r'step [1-4],', second.stdout)
    assert checkpoint_step(os.path.join(out, 'ckpt')) == 6
    assert np.abs(momentum_before).sum() > 0  # the optimizer slots were saved and restored


def assert_validation_logs_what_evaluation_reports(data, out, *extra):
    """Trains 4 steps validating and saving at 2 and 4; returns the log after checking
    that each validation's two lines are eval_ckpt_file.py's for that step's checkpoint."""
    result = run_training(flags(data, out, '--max_steps', '4', '--validate_interval', '2',
                                '--ckpt_interval', '2', *extra))
    assert result.returncode == 0, result.stdout
    lines = {}
    for step in (2, 4):
        prefix = os.path.join(out, 'ckpt', 'InsightFace_iter_%d.ckpt' % step)
        out_json = os.path.join(out, 'eval_%d.json' % step)
        assert eval_ckpt_file.main(['--ckpt_file', prefix, '--image_size', '%d,%d' % IMAGE_SIZE,
                                    '--eval_db_path', data['raw'], '--eval_datasets', 'lfw',
                                    '--batch_size', '8', '--device', 'cpu',
                                    '--output_json', out_json]) == 0
        with open(out_json) as f:
            evaluated = json.load(f)['results'][0]
        lines[step] = ('[lfw][%d]XNorm: %f' % (step, evaluated['xnorm']),
                       '[lfw][%d]Accuracy-Flip: %1.5f+-%1.5f'
                       % (step, evaluated['accuracy'], evaluated['accuracy_std']))
        for line in lines[step]:
            assert line in result.stdout, (line, result.stdout)
    # The steps' weights differ, so a validation scoring stale weights would fail above.
    assert lines[2][0].split(': ')[1] != lines[4][0].split(': ')[1]
    return result.stdout


def test_each_validation_logs_what_eval_ckpt_file_reports_for_its_step(tiny_data, tmp_path):
    """Validation embeds in its own graph, loaded with the training weights each time."""
    assert_validation_logs_what_evaluation_reports(tiny_data, str(tmp_path))


def read_events(summary_dir):
    """{step: {tag: Summary.Value}} and whether a graph was written, from every events file."""
    by_step, graph = {}, False
    for path in glob.glob(os.path.join(summary_dir, 'events.out.tfevents.*')):
        for event in tf.train.summary_iterator(path):
            graph = graph or event.HasField('graph_def')
            for value in event.summary.value:
                by_step.setdefault(event.step, {})[value.tag] = value
    return by_step, graph


def check_summaries(summary_dir, ckpt_dir, steps):
    """The original's TensorBoard: its scalar tags, histograms of every trainable variable
    (after the step, as in the checkpoint of that step) and of its gradient, the graph."""
    by_step, graph = read_events(summary_dir)
    assert graph
    conv = 'resnet_v1_18/conv1/W_conv2d'
    for step in steps:
        tags = by_step[step]
        for tag in ('inference_loss', 'wd_loss', 'total_loss', 'leraning_rate', 'lr', 'accuracy'):
            assert tags[tag].HasField('simple_value'), (step, tag)
        assert tags['leraning_rate'].simple_value == pytest.approx(0.01)
        for tag in (conv, conv + '/gradients', 'arcface_loss/embedding_weights/gradients',
                    'resnet_v1_18/E_BN2/beta', 'resnet_v1_18/block4/unit_2/bottleneck_v1/'
                    'prelu_layer/alphas/gradients'):
            assert tags[tag].HasField('histo'), (step, tag)
        assert tags[conv].histo.num == 3 * 3 * 3 * 64
        assert tags[conv + '/gradients'].histo.sum_squares > 0
        # The frozen gamma of E_BN2 is not trainable: no histogram, as in the original.
        assert 'resnet_v1_18/E_BN2/gamma' not in tags
    last = by_step[steps[-1]][conv].histo
    weights = tf.train.load_variable(tf.train.latest_checkpoint(ckpt_dir), conv)
    assert (last.min, last.max) == (weights.min(), weights.max())
    assert last.sum == pytest.approx(float(weights.astype(np.float64).sum()), rel=1e-6)


def rewrite_checkpoint(source, target, renames=(), dtypes=None, values=None):
    """Copies checkpoint `source` to `target`, renaming prefixes (old, new) and changing
    the stored type or value of named variables: the layout other writers use."""
    reader = tf.train.load_checkpoint(source)
    with tf.Graph().as_default():
        var_list = {}
        for name, _ in tf.train.list_variables(source):
            value = (values or {}).get(name, reader.get_tensor(name))
            if name in (dtypes or {}):
                value = np.asarray(value).astype(dtypes[name])
            for old, new in renames:
                if name == old or name.startswith(old + '/'):
                    name = new + name[len(old):]
            var_list[name] = tf.Variable(value, name='copy_%d' % len(var_list))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(var_list).save(sess, target, write_meta_graph=False)


def test_resumes_a_checkpoint_in_the_original_layout(tiny_data, tmp_path):
    """The original's int32 global_step (two increments per iteration), and the combine
    head's class centres under the scope this port's first releases used."""
    out = str(tmp_path)
    first = run_training(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '100',
                               '--loss_type', 'combine', '--summary_histograms', 'False'))
    assert first.returncode == 0, first.stdout
    trained = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    names = dict(tf.train.list_variables(trained))
    assert 'embedding_weights' in names and 'embedding_weights/Momentum' in names
    # Iteration 100 of the original: global_step 200, past the boundary 128 = int(512/4) * 1.
    other = os.path.join(out, 'original')
    rewrite_checkpoint(trained, os.path.join(other, 'InsightFace_iter_100.ckpt'),
                       renames=[('embedding_weights', 'combine_loss/embedding_weights')],
                       dtypes={'global_step': np.int32}, values={'global_step': 200})
    with open(os.path.join(other, 'checkpoint'), 'w') as index:
        index.write('model_checkpoint_path: "InsightFace_iter_100.ckpt"\n')
    assert tf.train.load_checkpoint(os.path.join(other, 'InsightFace_iter_100.ckpt')) \
        .get_variable_to_dtype_map()['global_step'] == tf.int32
    resumed = run_training(flags(tiny_data, out, '--max_steps', '202', '--validate_interval',
                                 '100', '--loss_type', 'combine', '--ckpt_path', other,
                                 '--lr_steps', '1', '--summary_histograms', 'False'))
    assert resumed.returncode == 0, resumed.stdout
    text = resumed.stdout
    assert 'global_step 200 stored as int32' in text and 'continues at step 200' in text
    assert 'embedding_weights read from combine_loss/embedding_weights' in text
    assert re.search(r'epoch \d+, total_step 201, .*samples/sec, lr 0\.001\b', text), text
    assert not re.search(r'total_step (1|2|199|200),', text)
    final = tf.train.latest_checkpoint(other)
    assert final.endswith('InsightFace_iter_202.ckpt')
    assert tf.train.load_variable(final, 'global_step') == 202


ORIGINAL_TRAIN_CHECKPOINT = os.path.join(PROJECT_ROOT, 'test', 'reference',
                                         'insightface_tf_r50_train_checkpoint.tsv')


def test_training_graph_holds_what_the_original_train_nets_saves():
    """train_graph.build_graph at depth 50 saves the variables (names, shapes, types) of a
    checkpoint the original's train_nets.py wrote, but global_step: int64 here, int32 there
    (read and converted on resume, see the test above)."""
    from training import setup, train_graph
    expected = {}
    with open(ORIGINAL_TRAIN_CHECKPOINT) as tsv:
        for line in tsv:
            if not line.startswith('#'):
                name, shape, dtype = line.rstrip('\n').split('\t')
                expected[name] = ([int(d) for d in shape.split(',')] if shape else [], dtype)
    args = train_nets.get_parser().parse_args(['--net_depth', '50', '--device', 'cpu'])
    plan = setup.Plan({'shard_paths': ['unused.tfrecord']}, 10, 1, 1, [], 'cpu', 0, 1, None,
                        False, [], None, [1, 2, 3], npu_options.make(), setup.graph_spec(args), None)
    with tf.Graph().as_default():
        train_graph.build_graph(plan.graph, plan)
        actual = {v.op.name: (v.shape.as_list(), v.dtype.base_dtype.name)
                  for v in tf.global_variables()}
    assert sorted(actual) == sorted(expected)
    assert expected.pop('global_step') == ([], 'int32') and actual.pop('global_step') == (
        [], 'int64')
    assert actual == expected




def test_a_copied_checkpoint_folder_uses_its_own_files(tiny_data, tmp_path):
    """Relative names in the `checkpoint` index; an index with absolute names (earlier
    releases, the original) is looked up inside its own folder, not where it points."""
    from nets import checkpoint_names
    out = str(tmp_path / 'first')
    assert run_training(flags(tiny_data, out, '--max_steps', '1', '--validate_interval', '100',
                              '--summary_histograms', 'False')).returncode == 0
    with open(os.path.join(out, 'ckpt', 'checkpoint')) as index:
        text = index.read()
    assert 'model_checkpoint_path: "InsightFace_iter_1.ckpt"' in text and out not in text
    copy = str(tmp_path / 'copy')
    shutil.copytree(os.path.join(out, 'ckpt'), copy)
    with open(os.path.join(copy, 'checkpoint'), 'w') as index:  # the old, absolute form
        index.write('model_checkpoint_path: "%s"\n'
                    % os.path.join(out, 'ckpt', 'InsightFace_iter_1.ckpt'))
    mine = os.path.join(copy, 'InsightFace_iter_1.ckpt')
    assert checkpoint_names.resolve_checkpoint(copy) == mine
    resumed = run_training(flags(tiny_data, str(tmp_path / 'second'), '--ckpt_path', copy,
                                 '--max_steps', '2', '--validate_interval', '100',
                                 '--summary_histograms', 'False'))
    assert resumed.returncode == 0, resumed.stdout
    assert 'resumed from %s\n' % mine in resumed.stdout


def test_sigterm_saves_a_checkpoint_then_exits(tiny_data, tmp_path):
    out = str(tmp_path)
    proc = start_training(flags(tiny_data, out, '--max_steps', '100000',
                                '--validate_interval', '100000', '--ckpt_interval', '100000'))
    try:
        for line in proc.stdout:
            if re.search(r'step 3,', line):
                break
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    step = checkpoint_step(os.path.join(out, 'ckpt'))
    assert step is not None and step >= 3
    assert 'stopped by signal' in output


def test_kill_9_during_training_resumes_from_last_complete_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    ckpt_dir = os.path.join(out, 'ckpt')
    # A checkpoint every step, so the kill very likely lands while one is being written.
    proc = start_training(flags(tiny_data, out, '--max_steps', '100000',
                                '--validate_interval', '100000', '--ckpt_interval', '1'))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(glob.glob(os.path.join(ckpt_dir, '*.index'))) < 3:
            time.sleep(0.05)
        time.sleep(0.37)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    step = checkpoint_step(ckpt_dir)
    assert step is not None and step >= 2
    resumed = run_training(flags(tiny_data, out, '--max_steps', str(step + 2),
                                 '--validate_interval', '100000', '--ckpt_interval', '100000'))
    assert resumed.returncode == 0, resumed.stdout
    assert 'resumed from' in resumed.stdout
    assert re.search(r'step %d,' % (step + 1), resumed.stdout)
    assert checkpoint_step(ckpt_dir) == step + 2


def test_non_finite_loss_stops_without_writing_a_nan_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    result = run_training(flags(tiny_data, out, '--max_steps', '50', '--validate_interval', '1000',
                                '--ckpt_interval', '1', '--lr_values', '1e30,1e30'))
    assert result.returncode == 1, result.stdout
    match = re.search(r'non-finite loss \((nan|inf)\) at step (\d+)', result.stdout)
    assert match, result.stdout
    for index in glob.glob(os.path.join(out, 'ckpt', '*.index')):
        prefix = index[:-len('.index')]
        for name, _ in tf.train.list_variables(prefix):
            assert np.all(np.isfinite(tf.train.load_variable(prefix, name))), (prefix, name)
        assert tf.train.load_variable(prefix, 'global_step') < int(match.group(2))


def refusal(capsys, argv):
    code = train_nets.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    return err


# Appended to a command line that should be refused: if it is accepted after all, the run
# stops after one step on one thread, so the test fails in seconds (and spares the machine).
ONE_STEP = ['--max_steps', '1', '--validate_interval', '100', '--summary_histograms', 'False',
            '--num_threads', '1']


def parser_refusal(capsys, argv):
    """A flag refused by the parser: one line, exit status 2, before anything is read."""
    with pytest.raises(SystemExit) as exit_info:
        train_nets.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_missing_tfrecords_tells_how_to_make_them(tiny_data, tmp_path, capsys):
    err = refusal(capsys, flags(dict(tiny_data, records=str(tmp_path / 'none')), str(tmp_path)))
    assert 'does not exist' in err and 'data/mx2tfrecords.py' in err and 'make demo' in err


def test_missing_bin_is_named(tiny_data, tmp_path, capsys):
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--eval_datasets', 'cfp_fp'))
    assert os.path.join(tiny_data['raw'], 'cfp_fp.bin') in err


def test_image_size_other_than_the_data_is_refused(tiny_data, tmp_path, capsys):
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--image_size', '112,112'))
    assert '--image_size 112,112' in err and '32,32' in err


@pytest.mark.parametrize('extra,expected', [
    (['--lr_values', '0.1'], '--lr_values has 1 values for 1 --lr_steps; expected one more'),
    (['--net_input_size', '64,32'], '--net_input_size 64,32: expected at most --image_size'),
])
def test_impossible_flags_are_refused(tiny_data, tmp_path, capsys, extra, expected):
    assert expected in refusal(capsys, flags(tiny_data, str(tmp_path), *extra))


@pytest.mark.parametrize('extra,expected', [
    # '=': argparse takes '-0.01,0.001' and '-5e-4' alone for options (refused too, as
    # "expected one argument").
    (['--lr_values=-0.01,0.001'], "argument --lr_values: expected comma-separated learning "
                                     "rates >= 0, got '-0.01,0.001'"),
    (['--lr_values', '0.01,nan'], "argument --lr_values: expected comma-separated learning "
                                  "rates >= 0, got '0.01,nan'"),
    (['--lr_values', '0,0'], "argument --lr_values: every learning rate is 0, so nothing "
                             "would train; expected at least one positive, got '0,0'"),
    (['--momentum', '-0.9'], "argument --momentum: expected a number in [0, 1), got '-0.9'"),
    (['--momentum', '1'], "argument --momentum: expected a number in [0, 1), got '1'"),
    (['--weight_decay=-5e-4'], "argument --weight_deacy/--weight_decay: expected a number "
                                  "in [0, inf), got '-5e-4'"),
    (['--weight_deacy', 'inf'], "argument --weight_deacy/--weight_decay: expected a number "
                                "in [0, inf), got 'inf'"),
    (['--margin_s', '0'], "argument --margin_s: expected a number in (0, inf), got '0'"),
    (['--margin_s', '-64'], "argument --margin_s: expected a number in (0, inf), got '-64'"),
    (['--margin_m', '-0.5'], "argument --margin_m: expected a number in [0, pi), got '-0.5'"),
    (['--margin_m', '3.1416'], "argument --margin_m: expected a number in [0, pi), got "
                               "'3.1416'"),
    (['--loss_type', 'combine', '--combine_margins', '1,-0.3,0'],
     "argument --combine_margins: 1,-0.3,0 make the target logit cos(m1*theta+m2)-m3 larger "
     "than the plain cos(theta) (by 0.296 at theta = 90 degrees); expected margins that "
     "lower it for theta in [0, 90] degrees, e.g. 1,0.3,0.2 or ArcFace's 1,0.5,0"),
    (['--loss_type', 'combine', '--combine_margins', '0.5,0,0'], "by 0.707 at theta = 90"),
    (['--loss_type', 'combine', '--combine_margins', '1,0,-0.2'], "by 0.2 at theta = 0"),
    (['--batch_size', '0'], "argument --batch_size: expected a positive integer, got '0'"),
    (['--max_bad_records=-1'], "argument --max_bad_records: expected an integer >= 0, got '-1'"),
    (['--augment', 'True', '--augment_strength', '0'],
     "argument --augment_strength: expected a number in (0, inf), got '0'"),
    (['--random_erase', '1.5'], "argument --random_erase: expected a number in [0, 1], got "
                                "'1.5'"),
    (['--keep_prob', '0'], "argument --keep_prob: expected a number in (0, 1], got '0'"),
    (['--clip_gradient_norm', '0'], "argument --clip_gradient_norm: expected a number in "
                                    "(0, inf), got '0'"),
    (['--decr_ratio', '1'], "argument --decr_ratio: expected a number in (0, 1), got '1'"),
    # The NPU's FixedLossScaleManager raises ValueError for a scale below 1.
    (['--loss_scale', '0.5'], "argument --loss_scale: expected 'dynamic' or a number >= 1, "
                              "got '0.5'"),
    (['--loss_scale', 'inf'], "argument --loss_scale: expected 'dynamic' or a number >= 1, "
                              "got 'inf'"),
    (['--loss_type', 'combine', '--combine_margins', '0,0.3,0.2'],
     "argument --combine_margins: expected m1 > 0 (the target logit must depend on the "
     "angle), got '0,0.3,0.2'"),
])
def test_nonsense_hyper_parameters_are_refused_by_the_parser(tiny_data, tmp_path, capsys,
                                                             extra, expected):
    err = parser_refusal(capsys, flags(tiny_data, str(tmp_path), *extra) + ONE_STEP)
    assert err.startswith('train_nets.py: error: ') and expected in err, err


@pytest.mark.parametrize('extra', [
    [],                                                # the original's defaults
    ['--momentum', '0', '--weight_decay', '0'],        # plain SGD, no decay
    ['--lr_values', '0.1,0', '--lr_steps', '100'],     # a frozen last phase
    ['--loss_type', 'arcface', '--margin_m', '0', '--margin_s', '0.5'],   # normalised softmax
    ['--loss_type', 'cosineface', '--margin_m', '0.35', '--margin_s', '30'],
    ['--loss_type', 'combine', '--combine_margins', '0.9,0.4,0.15'],   # insightface's example
    ['--loss_type', 'combine', '--combine_margins', '1,0.5,0'],        # ArcFace
    ['--loss_type', 'combine', '--combine_margins', '1,0,0.35'],       # CosFace
    ['--loss_type', 'combine', '--combine_margins', '1.35,0,0'],       # SphereFace-like
    ['--loss_type', 'combine', '--combine_margins', '1,0,0'],          # no margin
])
def test_legitimate_hyper_parameters_are_accepted(extra):
    args = train_nets.get_parser().parse_args(extra)
    assert train_nets.check_args(args) == []


def read_pairs(path):
    """The encoded images and pair labels of a .bin, as lists."""
    from data import eval_data_reader
    encoded, issame = eval_data_reader.read_bin(path)
    return encoded, [bool(s) for s in issame]


@pytest.mark.parametrize('num_pairs', [0, 9])
def test_a_verification_set_that_cannot_be_scored_is_refused_before_training(
        tiny_data, tmp_path, capsys, num_pairs):
    """eval_ckpt_file.py's rule (10 folds need 10 pairs), before any graph is built."""
    encoded, issame = read_pairs(os.path.join(tiny_data['raw'], 'lfw.bin'))
    path = tmp_path / 'db' / 'small.bin'
    path.parent.mkdir()
    with open(str(path), 'wb') as out:
        pickle.dump((encoded[:2 * num_pairs], issame[:num_pairs]), out, protocol=2)
    # Accepted after all, it would fail at its first validation, after step 1.
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--eval_db_path', str(path.parent),
                                '--eval_datasets', 'small', '--max_steps', '1',
                                '--validate_interval', '1', '--num_threads', '1'))
    assert err == ('train_nets.py: error: %s holds %d pairs; the 10-fold protocol needs at '
                   'least 10 (--eval_datasets small)\n' % (path, num_pairs)), err
    assert not os.path.exists(str(tmp_path / 'ckpt'))  # nothing written


@pytest.mark.parametrize('flag,target,expected', [
    ('--log_file_path', 'a_file', '--log_file_path {path} is a file; expected a folder'),
    ('--summary_path', 'a_file', '--summary_path {path} is a file; expected a folder'),
    ('--ckpt_path', 'a_file', '--ckpt_path {path} is a file; expected a folder'),
    ('--summary_path', 'a_file/summary', '--summary_path {path}: cannot create the folder '
                                         '(Not a directory)'),
    ('--ckpt_path', 'a_file/ckpt', '--ckpt_path {path}: cannot create the folder '
                                   '(Not a directory)'),
])
def test_an_output_path_that_is_no_folder_is_refused_before_training(
        tiny_data, tmp_path, capsys, flag, target, expected):
    (tmp_path / 'a_file').write_text(u'not a folder')
    path = str(tmp_path / target)
    err = refusal(capsys, flags(tiny_data, str(tmp_path), flag, path, *ONE_STEP))
    assert err == 'train_nets.py: error: %s\n' % expected.format(path=path), err
    assert (tmp_path / 'a_file').read_text() == u'not a folder'


def without_write_override():
    """A command prefix under which a read-only folder is read-only, also for root.

    root writes anywhere through the CAP_DAC_OVERRIDE capability; setpriv drops it from
    the child's bounding set (root still owns the test's files, so reads work).
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which('setpriv')
    if setpriv is None:
        pytest.skip('running as root without setpriv: a read-only folder stays writable')
    return [setpriv, '--bounding-set', '-dac_override,-dac_read_search']


def test_a_read_only_checkpoint_folder_is_refused_before_the_first_step(tiny_data, tmp_path):
    prefix = without_write_override()
    ckpt = tmp_path / 'ckpt'
    ckpt.mkdir()
    ckpt.chmod(0o555)
    try:
        result = subprocess.run(prefix + [sys.executable, 'train_nets.py'] + flags(
            tiny_data, str(tmp_path), *ONE_STEP), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True, timeout=240)
    finally:
        ckpt.chmod(0o755)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('train_nets.py')]
    assert errors == ['train_nets.py: error: --ckpt_path %s: cannot write in the folder (Permission '
                      'denied)' % ckpt], result.stderr
    assert 'total_step' not in result.stdout + result.stderr and not os.listdir(str(ckpt))


@pytest.fixture(scope='module')
def trained_checkpoint(tiny_data, tmp_path_factory):
    """A checkpoint folder as train_nets.py leaves it: depth 18, arcface, 8 identities,
    32x32 (the variables of train_graph.build_graph, saved untrained: no training needed)."""
    from training import checkpointing, setup, train_graph
    out = str(tmp_path_factory.mktemp('trained'))
    args = train_nets.get_parser().parse_args(flags(tiny_data, out))
    plan = setup.prepare(args)  # creates the output folders
    with tf.Graph().as_default():
        train_graph.build_graph(plan.graph, plan)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(save_relative_paths=True).save(
                sess, os.path.join(args.ckpt_path, checkpointing.CKPT_PREFIX % 1),
                write_meta_graph=False)
    return os.path.join(out, 'ckpt')


# Another flag than the checkpoint to resume was trained with -> the one line expected
# (%s: the checkpoint's prefix), found before any graph is built.
RESUME_REFUSALS = [
    (['--net_depth', '34'],
     'train_nets.py: error: --net_depth 34: the checkpoint to resume, %s, holds a depth-18 '
     'network (resnet_v1_18/...); resume with --net_depth 18, or start afresh with another '
     '--ckpt_path\n'),
    (['--loss_type', 'cosineface'],
     'train_nets.py: error: --loss_type cosineface: the checkpoint to resume, %s, was trained '
     'with --loss_type arcface (arcface_loss/embedding_weights); resume with --loss_type arcface, '
     'or start afresh with another --ckpt_path\n'),
    (['--num_output', '12'],
     'train_nets.py: error: --num_output 12: the checkpoint to resume, %s, has 8 classes '
     '(arcface_loss/embedding_weights is [512, 8]); resume with --num_output 8 (or, without '
     'it, data of 8 identities), or start afresh with another --ckpt_path\n'),
]


@pytest.mark.parametrize('extra,expected', RESUME_REFUSALS,
                         ids=['net_depth', 'loss_type', 'num_output'])
def test_resuming_with_another_network_names_the_flag(tiny_data, tmp_path, capsys,
                                                      trained_checkpoint, extra, expected):
    prefix = os.path.join(trained_checkpoint, 'InsightFace_iter_1.ckpt')
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--ckpt_path', trained_checkpoint,
                                *extra) + ONE_STEP)
    assert err == expected % prefix, err


def test_resuming_with_another_network_input_size_names_the_flag(tiny_data, tmp_path,
                                                                 trained_checkpoint):
    """Shapes only the built graph knows: compared before restoring, one line, exit 2."""
    result = run_training(flags(tiny_data, str(tmp_path), '--ckpt_path', trained_checkpoint,
                                '--net_input_size', '16,16', *ONE_STEP))
    assert result.returncode == 2, result.stdout
    assert 'Traceback' not in result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith('train_nets.py: ')]
    assert len(errors) == 1, result.stdout
    assert ('resnet_v1_18/E_DenseLayer/W has shape [2048, 512]; this graph has [512, 512]'
            in errors[0]), errors[0]
    assert '--net_input_size' in errors[0] and 'total_step' not in result.stdout


def test_unknown_depth_is_refused(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_nets.main(flags(tiny_data, str(tmp_path), '--net_depth', '102'))
    assert exit_info.value.code == 2
    assert "--net_depth: invalid choice: 102" in capsys.readouterr().err
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--net_depth', '101', *ONE_STEP))
    assert err == ('train_nets.py: error: --net_depth 101: the standard network has depths '
                   '18, 34, 50, 100, 152; pass one of them\n')
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--net_depth', '18', '--norm',
                                'group', *ONE_STEP))
    assert err == ('train_nets.py: error: --net_depth 18: the wide network (the width of --norm '
                   'group, as the original\'s file for it) has depths 50, 101, 152; pass one '
                   'of them, or --net_width standard\n')


def test_an_unknown_norm_is_refused_by_the_parser(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_nets.main(flags(tiny_data, str(tmp_path), '--norm', 'layer'))
    assert exit_info.value.code == 2
    assert "--norm: invalid choice: 'layer'" in capsys.readouterr().err


@pytest.mark.parametrize('norm', ['group', 'batch_renorm'])
def test_other_norms_train_resume_and_evaluate_like_their_validation(tiny_data, tmp_path,
                                                                     capsys, norm):
    """--norm group / batch_renorm at the standard width: trains, records its network,
    resumes, and eval_ckpt_file.py (no network flag) reports the accuracy validation
    logged; --norm contradicting the checkpoint is refused."""
    out = str(tmp_path)
    net = ['--norm', norm, '--net_width', 'standard']
    first = run_training(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2',
                               *net))
    assert first.returncode == 0, first.stdout
    second = run_training(flags(tiny_data, out, '--max_steps', '3', '--validate_interval', '3',
                                *net))
    assert second.returncode == 0, second.stdout
    assert 'resumed from' in second.stdout
    trained = re.search(r'\[lfw\]\[3\]Accuracy-Flip: (\d\.\d{5})', second.stdout).group(1)
    latest = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    names = dict(tf.train.list_variables(latest))
    mark = 'resnet_v1_18/group_norm_0/scale' if norm == 'group' else \
        'resnet_v1_18/bn0/renorm_mean'
    assert mark in names
    with open(os.path.join(out, 'ckpt', 'best', 'network.json')) as f:
        assert json.load(f)['norm'] == norm
    out_json = os.path.join(out, 'eval.json')
    evaluate = ['--ckpt_file', latest, '--image_size', '32,32', '--eval_db_path',
                tiny_data['raw'], '--eval_datasets', 'lfw', '--batch_size', '8', '--device', 'cpu']
    assert eval_ckpt_file.main(evaluate + ['--output_json', out_json]) == 0
    with open(out_json) as f:
        payload = json.load(f)
    assert payload['norm'] == norm
    assert '%.5f' % payload['results'][0]['accuracy'] == trained
    capsys.readouterr()
    assert eval_ckpt_file.main(evaluate + ['--norm', 'batch']) == 2
    assert capsys.readouterr().err == (
        'eval_ckpt_file.py: error: --norm batch: checkpoint %s holds a %s-norm network '
        '(resnet_v1_18/%s/...); drop --norm or pass --norm %s\n'
        % (latest, norm, 'group_norm_0' if norm == 'group' else 'bn0', norm))
    err = refusal(capsys, flags(tiny_data, out, '--net_width', 'standard', *ONE_STEP))
    assert err == ('train_nets.py: error: --norm batch: the checkpoint to resume, %s, holds a '
                   '%s-norm network; resume with --norm %s, or start afresh with another '
                   '--ckpt_path\n' % (latest, norm, norm))


def test_batch_larger_than_dataset_is_refused(tiny_data, tmp_path, capsys):
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--batch_size', '100'))
    assert '--batch_size 100 is larger than the 48 images' in err


def test_help_documents_every_flag():
    help_text = train_nets.get_parser().format_help()
    for flag in ('--batch_size', '--net_depth', '--epoch', '--momentum', '--weight_deacy',
                 '--weight_decay', '--eval_datasets', '--eval_db_path', '--image_size',
                 '--tfrecords_file_path', '--summary_path', '--ckpt_path', '--log_file_path',
                 '--saver_maxkeep', '--buffer_size', '--log_device_mapping',
                 '--summary_interval', '--ckpt_interval', '--validate_interval',
                 '--show_info_interval', '--num_output', '--lr_steps', '--lr_values',
                 '--keep_prob', '--max_steps', '--loss_type', '--device', '--precision_mode'):
        assert flag in help_text, flag
    args = train_nets.get_parser().parse_args([])
    assert (args.batch_size, args.net_depth, args.epoch, args.momentum, args.weight_decay) == (
        32, 100, 200, 0.9, 5e-4)
    assert args.image_size == (112, 112) and args.log_device_mapping is False
    typed = train_nets.get_parser().parse_args(['--weight_decay', '1e-3', '--batch_size', '64',
                                                '--log_device_mapping', 'True'])
    assert typed.weight_decay == 1e-3 and typed.batch_size == 64 and typed.log_device_mapping


ORIGINAL_LR_VALUES = [0.001, 0.0005, 0.0003, 0.0001]  # the original train_nets.py


@pytest.mark.parametrize('batch,boundaries', [
    (32, [640000, 960000, 1280000]),     # int(512 / 32) = 16
    (136, [120000, 180000, 240000]),     # int(512 / 136) = 3: the original's model D
    (1024, [20000, 30000, 40000]),       # over 512 the original's factor would be 0
])
def test_default_learning_rate_schedule_is_the_originals(batch, boundaries):
    from training import setup, train_graph
    args = train_nets.get_parser().parse_args(['--batch_size', str(batch)])
    assert setup.lr_boundaries(args.lr_steps, args.batch_size) == boundaries
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        rate = train_graph.learning_rate(global_step, setup.lr_boundaries(args.lr_steps, batch),
                                     args.lr_values, args.warmup_steps)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for step, expected in [(0, 0), (1, 0), (boundaries[0], 0), (boundaries[0] + 1, 1),
                                   (boundaries[1], 1), (boundaries[1] + 1, 2),
                                   (boundaries[2], 2), (boundaries[2] + 1, 3), (10 ** 8, 3)]:
                global_step.load(step, sess)
                assert sess.run(rate) == pytest.approx(ORIGINAL_LR_VALUES[expected], rel=1e-7), step


def test_clip_gradient_norm_clips_the_backbone_only():
    from training import train_graph
    with tf.Graph().as_default():
        conv = tf.Variable(np.zeros(3, np.float32), name='resnet_v1_18/conv1/W_conv2d')
        head = tf.Variable(np.zeros(2, np.float32), name='arcface_loss/embedding_weights')
        pairs = [(tf.constant([3.0, 0.0, 4.0]), conv), (tf.constant([30.0, 40.0]), head),
                 (None, tf.Variable(0.0, name='resnet_v1_18/unused'))]
        clipped = train_graph.clip_backbone_gradients(1.0)(pairs)
        with tf.Session() as sess:
            backbone, margin_head = sess.run([clipped[0][0], clipped[1][0]])
    np.testing.assert_allclose(backbone, [0.6, 0.0, 0.8], rtol=1e-6)  # norm 5 -> 1
    np.testing.assert_allclose(margin_head, [30.0, 40.0])  # the head is not clipped
    assert clipped[2][0] is None and [v for _, v in clipped] == [v for _, v in pairs]


def test_boundaries_use_the_batch_of_all_devices():
    from training import setup
    assert setup.lr_boundaries([1000], 128 * 4) == [1000]   # 4 workers of 128
    assert setup.lr_boundaries([1000], 100) == [5000]       # int(5.12) = 5, not 5120


def test_mgpu_has_the_original_mgpu_defaults():
    import train_nets_mgpu
    args = train_nets_mgpu.get_parser().parse_args([])
    train_nets_mgpu.complete_args(args)
    assert (args.net_depth, args.buffer_size, args.ckpt_interval, args.num_gpus) == (
        50, 50000, 5000, 2)
    assert args.eval_datasets == ['lfw', 'cfp_fp']
    assert args.lr_values == [0.001, 0.0001, 0.00005, 0.00001]
    towers = train_nets_mgpu.get_parser().parse_args(['--devices', '/cpu:0,/cpu:1'])
    train_nets_mgpu.complete_args(towers)
    assert towers.num_gpus is None


def test_augment_strength_scales_every_range():
    from training import setup
    parser = train_nets.get_parser()

    def augmentation(args):
        return setup.graph_spec(args).augmentation
    base = ['--tfrecords_file_path', 'x', '--augment', 'True']
    plain = augmentation(parser.parse_args(base))
    double = augmentation(parser.parse_args(base + ['--augment_strength', '2']))
    assert plain == {'max_translation': 8, 'crop_scale': (0.9, 1.0), 'brightness_delta': 0.1,
                     'contrast_range': (0.8, 1.2)}
    assert double['max_translation'] == 16 and double['crop_scale'] == (0.8, 1.0)
    assert double['brightness_delta'] == pytest.approx(0.2)
    assert double['contrast_range'] == pytest.approx((0.6, 1.4))
    assert augmentation(parser.parse_args(['--tfrecords_file_path', 'x'])) == {}
    erase = ['--random_erase', '0.4']
    assert augmentation(parser.parse_args(base + erase)) == dict(plain, erase_max_side=0.4)
    assert augmentation(parser.parse_args(['--tfrecords_file_path', 'x'] + erase)) == {
        'erase_max_side': 0.4}


def test_net_input_size_trains_validates_evaluates_and_exports_at_the_smaller_size(
        tiny_data, tmp_path, capsys):
    out = str(tmp_path)
    result = run_training(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2',
                                '--net_input_size', '16,16'))
    assert result.returncode == 0, result.stdout
    # 16x16 leaves a 1x1 final map: the dense layer has 512 rows, not 2x2x512.
    latest = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    assert tf.train.load_variable(latest, 'resnet_v1_18/E_DenseLayer/W').shape == (512, 512)
    trained = re.search(r'\[lfw\]\[2\]Accuracy-Flip: (\d\.\d{5})', result.stdout).group(1)

    evaluate = ['--ckpt_file', latest, '--net_depth', '18', '--image_size', '32,32',
                '--eval_db_path', tiny_data['raw'], '--eval_datasets', 'lfw',
                '--batch_size', '8', '--device', 'cpu']
    out_json = os.path.join(out, 'eval.json')
    assert eval_ckpt_file.main(evaluate + ['--net_input_size', '16,16',
                                           '--output_json', out_json]) == 0
    with open(out_json) as json_file:
        payload = json.load(json_file)
    # The same resize in validation and evaluation: the same embeddings and accuracy.
    assert '%.5f' % payload['results'][0]['accuracy'] == trained
    assert payload['net_input_size'] == [16, 16]
    # The folder records the size (network.json): no flag needed, a contradicting one
    # refused; 12,12 ends in the same 1x1 map as 16,16, so only the record can tell.
    assert eval_ckpt_file.main(evaluate + ['--output_json', out_json, '--overwrite']) == 0
    with open(out_json) as json_file:
        assert '%.5f' % json.load(json_file)['results'][0]['accuracy'] == trained
    capsys.readouterr()
    assert eval_ckpt_file.main(evaluate + ['--net_input_size', '12,12']) == 2
    record = os.path.join(out, 'ckpt', 'network.json')
    assert capsys.readouterr().err == (
        'eval_ckpt_file.py: error: --net_input_size 12,12: checkpoint %s was trained at 16,16 '
        '(%s); drop the flag or pass --net_input_size 16,16\n' % (latest, record))
    with open(record) as f:
        assert json.load(f) == {'net_depth': 18, 'net_width': 'standard', 'norm': 'batch',
                                'input_size': [16, 16], 'embedding_size': 512,
                                'written_by': 'train_nets.py'}
    # Without the record (the original's checkpoints): the names alone, and a hint that
    # names every size the map allows rather than one guess.
    os.remove(record)
    assert eval_ckpt_file.main(evaluate) == 2
    err = capsys.readouterr().err
    assert 'E_DenseLayer/W' in err and 'from 1,1 to 16,16 gives' in err, err

    export = ['--ckpt_file', latest, '--net_depth', '18', '--image_size', '32,32',
              '--format', 'pb', '--output_dir', os.path.join(out, 'export')]
    assert export_model.main(export) == 2
    assert 'net_input_size' in capsys.readouterr().err
    assert export_model.main(export + ['--net_input_size', '16,16']) == 0
    graph_def = tf.GraphDef()
    with open(os.path.join(out, 'export', export_model.FROZEN_GRAPH), 'rb') as f:
        graph_def.ParseFromString(f.read())
    placeholder = [n for n in graph_def.node if n.name == inference.INPUT_NODE][0]
    assert [d.size for d in placeholder.attr['shape'].shape.dim][1:] == [32, 32, 3]


def summary_values(summary_dir, step, prefix):
    by_step, _ = read_events(summary_dir)
    return {tag[len(prefix):]: value.simple_value for tag, value in by_step[step].items()
            if tag.startswith(prefix)}


def test_eval_ijb_validates_like_eval_ijb_py_and_chooses_the_best_checkpoint(
        tiny_data, tmp_path):
    from test_eval_ijb import write_release
    import eval_ijb
    out = str(tmp_path)
    release = write_release(os.path.join(out, 'IJBC'))['root']
    result = run_training(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2',
                                '--summary_histograms', 'False', '--eval_ijb', release,
                                '--eval_ijb_workers', '1', '--best_metric', 'ijbc'))
    assert result.returncode == 0, result.stdout
    logged = dict(re.findall(r'\[ijbc\]\[2\]TAR@FAR=(1e-\d): (\d\.\d{5})$', result.stdout, re.M))
    assert sorted(logged) == ['1e-4', '1e-5'], result.stdout
    assert re.search(r'\[lfw\]\[2\]Accuracy-Flip', result.stdout)  # the .bin set as before
    with open(os.path.join(out, 'ckpt', 'best', 'best.json')) as info:
        best = json.load(info)
    assert (best['dataset'], best['metric'], best['step']) == ('ijbc', 'TAR@FAR=1e-4', 2)
    assert '%.5f' % best['value'] == logged['1e-4'] and 'accuracy' not in best
    in_training = summary_values(os.path.join(out, 'summary'), 2, 'ijbc/TAR@FAR=')

    # The standalone tool on the checkpoint of step 2, at the size the network trained on.
    report = os.path.join(out, 'ijb.json')
    assert eval_ijb.main(['--ckpt_file', os.path.join(out, 'ckpt', 'InsightFace_iter_2.ckpt'),
                          '--ijb_root', release, '--net_input_size', '32,32', '--batch_size',
                          '8', '--num_workers', '0', '--device', 'cpu',
                          '--output_json', report]) == 0
    with open(report) as payload:
        standalone = json.load(payload)['results'][0]['tar_at_far']
    assert sorted(in_training) == sorted(standalone)
    for far, tar in standalone.items():
        assert in_training[far] == pytest.approx(tar, abs=1e-6), far

    # An image that stops decoding stops training at the next validation, naming it, with
    # a checkpoint of the step (the release's files were checked at the start only).
    with open(os.path.join(release, 'loose_crop', '3.jpg'), 'wb') as broken:
        broken.write(b'not an image')
    result = run_training(flags(tiny_data, out, '--max_steps', '4', '--validate_interval', '2',
                                '--summary_histograms', 'False', '--eval_ijb', release,
                                '--eval_ijb_workers', '1', '--best_metric', 'ijbc'))
    assert result.returncode == 1, result.stdout
    assert re.search(r'training stopped at step 4: %s:3: .*3\.jpg.*; checkpoint \S+_4\.ckpt$'
                     % re.escape(os.path.join(release, 'meta', 'ijbc_name_5pts_score.txt')),
                     result.stdout, re.M), result.stdout
    assert checkpoint_step(os.path.join(out, 'ckpt')) == 4


def test_eval_ijb_and_best_metric_are_checked_before_training(tiny_data, tmp_path, capsys):
    from test_eval_ijb import write_release
    out = str(tmp_path)
    err = refusal(capsys, flags(tiny_data, out, '--best_metric', 'ijbc') + ONE_STEP)
    assert ('--best_metric ijbc: expected one of this run\'s validation sets: lfw '
            '(--eval_datasets; ijbc or ijbb need --eval_ijb)') in err
    release = write_release(os.path.join(out, 'IJBC'))['root']
    err = refusal(capsys, flags(tiny_data, out, '--eval_ijb', release, '--eval_ijb_target',
                                'IJBB') + ONE_STEP)
    assert err.startswith('train_nets.py: ') and '--eval_ijb: ' in err
    assert os.path.join(release, 'meta', 'ijbb_face_tid_mid.txt') in err
    assert not os.path.exists(os.path.join(out, 'ckpt'))  # refused before any output
