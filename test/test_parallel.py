"""parallel.py's towers against one device, and train_nets_mgpu.py end to end, on 2 logical CPUs.

Batch norm in training mode normalises with each tower's own batch
statistics, so the towers see the same images in a different order
(tower 0: A, B; tower 1: B, A) but with different labels: their batch
statistics equal the whole batch's, while their gradients differ, so the
average is really exercised. Dropout is off (keep_prob 1).
"""
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from losses import objective
from devices import parallel
import train_nets_mgpu
from nets import layers

from conftest import PROJECT_ROOT  # noqa: E402
IMAGE_SIZE = (32, 32)
DEPTH = 18
NUM_CLASSES = 4
TWO_CPUS = ['/cpu:0', '/cpu:1']
STEPS = 2  # the second step also checks the momentum slots and the reuse of updated weights
LEARNING_RATE = 0.01
UPDATE_FLOOR = 1e-4  # update norms this small are rounding noise (see update_errors)


def batches(per_tower=4, seed=0):
    """(whole batch, its labels): tower halves hold the same images, other labels.

    Tower 0 gets A, B, C, D; tower 1 gets D, C, B, A with other labels. (With
    only two distinct images, the embedding's batch norm normalises pairs to
    about +-1 and amplifies rounding too much for a tight comparison.)
    """
    rng = np.random.RandomState(seed)
    half = rng.uniform(-1, 1, (per_tower,) + IMAGE_SIZE + (3,)).astype(np.float32)
    images = np.concatenate([half, half[::-1]])
    labels = np.arange(2 * per_tower, dtype=np.int64) % NUM_CLASSES
    return images, labels


def build_step(images, labels, devices=None, combine_fn=None, weight_decay=5e-3):
    """The training step of trainer.py, on constant data; returns (losses, train_op)."""
    global_step = tf.train.get_or_create_global_step()

    def loss_fn(batch_images, batch_labels):
        losses = objective.training_losses(batch_images, batch_labels, DEPTH, NUM_CLASSES,
                                           weight_decay=weight_decay, keep_prob=1.0)
        return losses.inference, losses.weight_decay, losses

    optimizer = tf.train.MomentumOptimizer(LEARNING_RATE, 0.9)
    losses, train_op, _ = parallel.build_train_op(tf.constant(images), tf.constant(labels),
                                                  loss_fn, optimizer, global_step,
                                                  devices=devices, combine_fn=combine_fn)
    return losses, train_op


def run_steps(sess, losses, train_op, steps=STEPS):
    """Runs the steps; returns ({variable: value} after them, the first step's losses)."""
    first = None
    for _ in range(steps):
        first = first or sess.run(losses._asdict())
        sess.run(train_op)
    variables = tf.global_variables()
    return dict(zip([v.op.name for v in variables], sess.run(variables))), first


def initial_feed(variables, initial=None):
    """Feeds for the initialisers: `initial` values, or else PReLU slopes of 1.

    Starting with slope 1 (the identity) keeps every activation off the
    PReLU kink. At a kink, a rounding difference of 1e-6 (two towers sum in
    another order than one device) flips a gradient; with a million
    activations some always sit that close, and a flipped one changes its
    channel's gradient by percents. (Slope 0, the default, is a ReLU.)
    """
    if initial is not None:
        return {v.initial_value: initial[v.op.name] for v in variables}
    return {v.initial_value: np.ones(v.get_shape().as_list(), np.float32)
            for v in variables if v.op.name.endswith('/alphas')}


def train_steps(images, labels, devices=None, initial=None):
    """One process: builds the step, loads `initial` (if given), runs STEPS steps.

    Returns:
      dict with 'start' and 'values' ({variable name: array} before and after),
      'losses' (of the first step) and 'bessel' (see bessel_counts).
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(1)
        losses, train_op = build_step(images, labels, devices)
        variables = tf.global_variables()
        config = parallel.configure_session(tf.ConfigProto(), devices or [])
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer(), initial_feed(variables, initial))
            start = dict(zip([v.op.name for v in variables], sess.run(variables)))
            values, first = run_steps(sess, losses, train_op)
            cpus = [d for d in sess.list_devices() if d.device_type == 'CPU']
    return {'start': start, 'values': values, 'losses': first, 'graph': graph,
            'bessel': bessel_counts(train_op), 'cpus': len(cpus)}


def batch_norm_updates(train_op):
    """The moving-average assignments the train op runs (its ancestors)."""
    seen, stack, updates = set(), [train_op], []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == 'AssignSub' and op.inputs[0].op.name.endswith(('moving_mean',
                                                                     'moving_variance')):
            updates.append(op)
        stack.extend([t.op for t in op.inputs] + list(op.control_inputs))
    return updates


def bessel_counts(train_op):
    """{moving_variance name: values per channel} of each fused batch norm update.

    The fused kernel returns the unbiased batch variance (times n / (n - 1)),
    so a tower's moving variance, from half the batch, moves by a slightly
    different factor than the whole batch's; 2-D batch norm (tf.nn.moments)
    is biased and is left out.
    """
    counts = {}
    for update in batch_norm_updates(train_op):
        name = update.inputs[0].op.name
        # The update is (moving - stop_gradient(batch variance)) * (1 - decay).
        stack = [update.inputs[1].op]
        while stack and name.endswith('moving_variance'):
            op = stack.pop()
            if op.type == 'StopGradient':
                source = op.inputs[0].op
                if source.type.startswith('FusedBatchNorm'):
                    shape = source.inputs[0].get_shape().as_list()
                    counts[name] = shape[0] * shape[1] * shape[2]
                break
            stack.extend(t.op for t in op.inputs)
    return counts


def biased_moving_variance(run, name, initial):
    """The moving variance's accumulated batch variances without Bessel's factor."""
    decay = layers.DEFAULTS.bn_decay ** STEPS
    n = run['bessel'].get(name)
    factor = 1.0 if n is None else (n - 1.0) / n
    return (run['values'][name] - decay * initial[name]) * factor


def update_error(reference, other, initial, names):
    """||other's update - reference's update|| / ||reference's update||, over `names` together.

    Relative to the update, not the weights, so it is tight and scale-free;
    taken over many variables together because some updates are zero but for
    rounding (a bias before a batch norm). Moving variances are compared
    without Bessel's factor.
    """
    ref, got = [], []
    for name in names:
        if name.endswith('moving_variance'):
            ref.append(biased_moving_variance(reference, name, initial))
            got.append(biased_moving_variance(other, name, initial))
        else:
            ref.append(reference['values'][name] - initial[name])
            got.append(other['values'][name] - initial[name])
    ref, got = np.concatenate([np.ravel(r) for r in ref]), np.concatenate([np.ravel(g)
                                                                          for g in got])
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def max_abs_diff(a, b, skip='moving_variance'):
    """Largest element-wise difference between two {name: value} dicts."""
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a if not name.endswith(skip))


def variable_groups(values):
    """(weights and optimizer slots, batch-norm moving statistics) names."""
    moving = sorted(n for n in values if n.endswith(('moving_mean', 'moving_variance')))
    trained = sorted(n for n in values if n not in moving and n != 'global_step')
    return trained, moving


@pytest.fixture(scope='module')
def runs():
    images, labels = batches()
    single = train_steps(images, labels)
    initial = single['start']
    towers = train_steps(images, labels, TWO_CPUS, initial)
    half = train_steps(images[:len(images) // 2], labels[:len(labels) // 2], None, initial)
    return {'initial': initial, 'single': single, 'towers': towers, 'half': half}


def test_two_towers_equal_one_device_with_the_whole_batch(runs):
    single, towers, initial = runs['single'], runs['towers'], runs['initial']
    assert towers['cpus'] == 2
    assert sorted(single['values']) == sorted(towers['values'])  # the same names
    assert not [name for name in towers['values'] if 'clone_' in name]
    trained, moving = variable_groups(single['values'])
    assert [n for n in trained if n.endswith('/Momentum')] and len(moving) > 10
    assert towers['values']['global_step'] == single['values']['global_step'] == STEPS
    trained_error = update_error(single, towers, initial, trained)
    moving_error = update_error(single, towers, initial, moving)
    diff = max_abs_diff(single['values'], towers['values'])
    teeth = update_error(single, runs['half'], initial, trained)
    print('\n2 towers vs 1 device, %d Momentum steps: max |difference| %.2g (all variables '
          'but the moving variances); update error %.2g (weights and slots), %.2g (moving '
          'statistics); training on half the batch instead: update error %.2f'
          % (STEPS, diff, trained_error, moving_error, teeth))
    assert trained_error < 1e-3 and moving_error < 1e-3 and diff < 1e-3
    assert teeth > 0.3  # the comparison tells a different step apart


def test_reported_losses_cover_the_whole_batch_and_count_weight_decay_once(runs):
    single, towers = runs['single']['losses'], runs['towers']['losses']
    for name in ('total', 'inference', 'weight_decay', 'accuracy'):
        np.testing.assert_allclose(towers[name], single[name], rtol=1e-5, err_msg=name)
    assert single['weight_decay'] > 0.0


def test_towers_are_placed_scoped_and_update_batch_norm_from_tower_zero(runs):
    graph = runs['towers']['graph']
    ops = graph.get_operations()
    clone1 = [op for op in ops if op.name.startswith('clone_1/') and op.type == 'Conv2D']
    assert clone1 and all(op.device.endswith('CPU:1') for op in clone1)
    clone0 = [op for op in ops if op.name.startswith('clone_0/') and op.type == 'Conv2D']
    assert clone0 and all(op.device.endswith('CPU:0') for op in clone0)
    train = graph.get_operation_by_name('Momentum')
    updates = [op.name for op in batch_norm_updates(train)]
    single = runs['single']['graph'].get_operation_by_name('Momentum')
    assert len(updates) == len(batch_norm_updates(single)) > 0
    assert all(name.startswith('clone_0/') for name in updates), updates
    assert len(graph.get_collection(tf.GraphKeys.UPDATE_OPS)) == 2 * len(updates)
    assert not [op for op in ops if op.name.startswith('clone_') and op.type == 'VariableV2']


@pytest.mark.parametrize('kwargs,message', [
    ({'num_gpus': 0}, '--num_gpus 0'),
    ({'devices': ['/cpu:0', '/cpu:0']}, 'twice'),
    ({'devices': ['/tpu:0']}, '/tpu:0'),
    ({'devices': ['/cpu:0'], 'num_gpus': 2}, '--num_gpus 2 but --devices lists 1'),
    ({'num_gpus': 2, 'num_visible_gpus': 1}, 'sees 1 GPU'),
])
def test_bad_tower_devices_are_refused(kwargs, message):
    with pytest.raises(ValueError) as error:
        parallel.resolve_devices(**kwargs)
    assert message in str(error.value)


def test_device_names_are_normalised():
    assert parallel.resolve_devices(devices=['/cpu:0', 'CPU:1']) == ['/device:CPU:0',
                                                                     '/device:CPU:1']
    assert parallel.resolve_devices(num_gpus=2, num_visible_gpus=2) == ['/device:GPU:0',
                                                                        '/device:GPU:1']
    assert parallel.resolve_devices() == []


# ---- train_nets_mgpu.py end to end ----

def flags(data, out, *extra):
    return ['--tfrecords_file_path', data['records'], '--eval_db_path', data['raw'],
            '--eval_datasets', 'lfw', '--image_size', '%d,%d' % IMAGE_SIZE,
            '--net_depth', str(DEPTH), '--batch_size', '4', '--eval_batch_size', '8',
            '--buffer_size', '16', '--ckpt_path', os.path.join(out, 'ckpt'),
            '--summary_path', os.path.join(out, 'summary'),
            '--log_file_path', os.path.join(out, 'logs'), '--lr_values', '0.01,0.001',
            '--lr_steps', '1000', '--show_info_interval', '1', '--device', 'cpu',
            '--devices', ','.join(TWO_CPUS)] + list(extra)


def run_mgpu(args):
    return subprocess.run([sys.executable, 'train_nets_mgpu.py'] + args, cwd=PROJECT_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=240)


def test_train_nets_mgpu_trains_checkpoints_and_resumes_on_two_cpus(tiny_data, tmp_path):
    out = str(tmp_path)
    ckpt = os.path.join(out, 'ckpt')
    first = run_mgpu(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2',
                           '--log_device_mapping', 'True'))
    assert first.returncode == 0, first.stdout
    assert re.search(r'epoch 0, total_step 1, total loss is [\d.]+', first.stdout)
    assert re.search(r'\[lfw\]\[2\]Accuracy-Flip', first.stdout)
    assert re.search(r'clone_1/\S+: \(Conv2D\): /job:localhost/replica:0/task:0/device:CPU:1',
                     first.stdout)
    latest = tf.train.latest_checkpoint(ckpt)
    assert latest.endswith('InsightFace_iter_2.ckpt')
    names = [name for name, _ in tf.train.list_variables(latest)]
    assert 'resnet_v1_18/conv1/W_conv2d' in names and not [n for n in names if 'clone' in n]
    second = run_mgpu(flags(tiny_data, out, '--max_steps', '3', '--validate_interval', '100'))
    assert second.returncode == 0, second.stdout
    assert 'resumed from %s' % latest in second.stdout
    assert re.search(r'step 3,', second.stdout) and not re.search(r'step [12],', second.stdout)
    assert tf.train.load_variable(tf.train.latest_checkpoint(ckpt), 'global_step') == 3
    assert len(glob.glob(os.path.join(out, 'logs', 'train_*.log'))) == 2


def test_batch_not_divisible_by_the_towers_is_refused(tiny_data, tmp_path, capsys):
    code = train_nets_mgpu.main(flags(tiny_data, str(tmp_path), '--batch_size', '5'))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith('train_nets_mgpu.py: error: --batch_size 5 is not divisible by the 2 tower '
                          'devices'), err


def test_help_lists_the_tower_and_cluster_flags():
    help_text = train_nets_mgpu.get_parser().format_help()
    for flag in ('--num_gpus', '--devices', '--worker_hosts', '--task_index', '--batch_size'):
        assert flag in help_text
