"""Partial FC over two processes: TensorFlow gRPC workers, and HCCL ranks of the npu_bridge
STAND-IN (whose hccl_ops are TensorFlow collectives between the rank processes).

Each pair trains with `--partial_fc True` (each process holds one block of the class
centres) beside a pair training today's data-parallel head, same seed and data. The
logged losses and accuracy of every step, and the backbone after the steps, must agree:
the sharded head trains the same model. The chief merges every process's blocks into one
checkpoint, which then resumes on one process (the whole head) and on four towers.

The comparison trains at a small learning rate and margin scale: a scale-64 head on
batches of 4 amplifies float rounding ~10x per step (two data-parallel runs whose
learning rates differ by 0.1% drift apart the same way), which would hide the
agreement being tested.
"""
import glob
import os
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import PROJECT_ROOT  # noqa: E402
from test_distributed import free_ports, start_workers, wait_workers
from test_npu_ranks import finish, start_ranks

STEPS = 10
COMPARED = ['--max_steps', str(STEPS), '--lr_values', '0.000001,0.000001', '--lr_steps', '1000',
            '--margin_s', '16', '--summary_interval', '1', '--ckpt_interval', '100',
            '--validate_interval', '100', '--show_info_interval', '1', '--seed', '5',
            '--net_depth', '18', '--batch_size', '4', '--eval_batch_size', '8',
            '--buffer_size', '16', '--eval_datasets', 'lfw']
REPORTED = ('total_loss', 'inference_loss', 'wd_loss', 'accuracy')
HEAD = re.compile(r'^arcface_loss/embedding_weights(?:_(\d+)_(\d+))?(/Momentum)?$')
LAST = 'InsightFace_iter_%d.ckpt' % STEPS


def outputs(root, name):
    """The run's output flags: one --ckpt_path for both processes (the merged
    checkpoint needs a shared folder), the rest written by rank 0 only."""
    out = os.path.join(root, name)
    return ['--ckpt_path', os.path.join(out, 'ckpt'), '--summary_path',
            os.path.join(out, 'summary'), '--log_file_path', os.path.join(out, 'logs')]


def reported(root, name):
    """{tag: [value at step 1..STEPS]} of REPORTED, from rank 0's summaries."""
    values = {}
    for path in glob.glob(os.path.join(root, name, 'summary', 'events*')):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in REPORTED:
                    values[(value.tag, event.step)] = value.simple_value
    return {tag: [values[(tag, step)] for step in range(1, STEPS + 1)] for tag in REPORTED}


def stored(root, name):
    """{variable: value} of the run's last checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(root, name, 'ckpt', LAST))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def whole_head(values, slot):
    """The class centres (or their Momentum), blocks put side by side in class order."""
    blocks = sorted((int(m.group(1) or 0), values[n]) for n, m in
                    ((n, HEAD.match(n)) for n in values) if m and bool(m.group(3)) == slot)
    return np.concatenate([value for _, value in blocks], axis=1)


LOGGED = re.compile(r'total_step (\d+), total loss is ([0-9.]+) , inference loss is ([0-9.]+), '
                    r'weight deacy loss is ([0-9.]+), training accuracy is ([0-9.]+)')


def logged(output):
    """{tag: [value at step 1..STEPS]} of REPORTED, from one process's log lines."""
    lines = {int(m.group(1)): [float(v) for v in m.groups()[1:]]
             for m in LOGGED.finditer(output)}
    return {tag: [lines[step][i] for step in range(1, STEPS + 1)]
            for i, tag in enumerate(REPORTED)}


def assert_same_training(root, sharded, reference, want=None, atol=0.0):
    """Per-step reported values (rank 0's; `want` if given, else the reference's rank 0)
    and the last checkpoint agree to float tolerance."""
    got, want = reported(root, sharded), want or reported(root, reference)
    for tag in REPORTED:
        np.testing.assert_allclose(got[tag], want[tag], rtol=2e-5, atol=atol, err_msg=tag)
    assert len(set(np.round(want['inference_loss'], 2))) > STEPS // 2  # steps differ
    got, want = stored(root, sharded), stored(root, reference)
    blocks = sorted(n for n in got if HEAD.match(n))
    assert blocks == ['arcface_loss/embedding_weights_0_4',
                      'arcface_loss/embedding_weights_0_4/Momentum',
                      'arcface_loss/embedding_weights_4_4',
                      'arcface_loss/embedding_weights_4_4/Momentum'], blocks
    backbone = sorted(n for n in want if not HEAD.match(n))
    assert backbone == sorted(n for n in got if not HEAD.match(n))
    # The Momentum slots hold every step's gradient (decayed): they are the updates. Seen:
    # 1e-6 apart for four steps, then one step whose gradient differed by 0.7% while its
    # loss agreed to 1e-7 (batch norm over 4 images scales its gradient by 1 / the spread
    # of a feature over the batch, which can magnify the last digits); a wrong gradient
    # rule (blocks counted N times, another process's rows, blocks averaged) is off by
    # tens of percent.
    for kind, tolerance in (('/Momentum', 1e-2), ('/moving_', 1e-4), ('', 1e-6)):
        names = [n for n in backbone if kind in n] if kind else [
            n for n in backbone if '/Momentum' not in n and '/moving_' not in n]
        a, b = (np.concatenate([values[n].ravel() for n in names]) for values in (got, want))
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < tolerance, kind
    moved = want['resnet_v1_18/conv1/W_conv2d/Momentum']  # the backbone did train
    assert float(np.abs(moved).max()) > 1e-2
    for slot in (False, True):
        difference = whole_head(got, slot) - whole_head(want, slot)
        assert np.linalg.norm(difference) / np.linalg.norm(whole_head(want, slot)) < 1e-4
    # Nothing left of the parts the chief merged.
    assert not glob.glob(os.path.join(root, sharded, 'ckpt', '*.part-*'))


# ---------------------------------------------------------------- gRPC workers

def worker_commands(data, root, name, extra, names=None):
    """train_nets.py as two workers; `names` gives each its own output folders."""
    hosts = ','.join('127.0.0.1:%d' % port for port in free_ports(2))
    return [[sys.executable, os.path.join(PROJECT_ROOT, 'train_nets.py'),
             '--tfrecords_file_path', data['records'], '--eval_db_path', data['raw'],
             '--image_size', '32,32', '--device', 'cpu', '--worker_hosts', hosts,
             # float32: on a CPU with bfloat16 the backbone would round to 8 bits, far
             # beyond the tolerances below
             '--mixed_precision', 'off', '--task_index', str(rank)] + COMPARED + outputs(root, (names or [name] * 2)[rank])
            + list(extra) for rank in (0, 1)]


@pytest.fixture(scope='module')
def worker_runs(tmp_path_factory, tiny_data):
    """Both pairs of workers at once (graph building keeps one core busy per process)."""
    root = str(tmp_path_factory.mktemp('workers'))
    commands = (worker_commands(tiny_data, root, 'sharded', ['--partial_fc', 'True'])
                + worker_commands(tiny_data, root, 'data_parallel', []))
    results = wait_workers(start_workers(commands))
    for code, output in results:
        assert code == 0, output
    return root, results


def test_two_workers_with_a_sharded_head_train_the_data_parallel_model(worker_runs):
    root, results = worker_runs
    assert ("rank 1 of 2: all variables broadcast from rank 0 but this rank's blocks of the "
            "head") in results[1][1]
    assert_same_training(root, 'sharded', 'data_parallel')


def test_the_merged_checkpoint_resumes_whole_on_one_process_and_on_four_towers(
        worker_runs, tiny_data):
    root = worker_runs[0]
    runs = {}
    for name, script, extra in (
            ('one', 'train_nets.py', ['--batch_size', '8']),
            ('four', 'train_nets_mgpu.py', ['--batch_size', '8', '--partial_fc', 'True',
                                            '--devices', '/cpu:0,/cpu:1,/cpu:2,/cpu:3'])):
        shutil.copytree(os.path.join(root, 'sharded', 'ckpt'), os.path.join(root, name, 'ckpt'))
        runs[name] = [sys.executable, os.path.join(PROJECT_ROOT, script),
                      '--tfrecords_file_path', tiny_data['records'], '--eval_db_path',
                      tiny_data['raw'], '--image_size', '32,32', '--device', 'cpu'] + COMPARED + [
            '--max_steps', str(STEPS + 2)] + outputs(root, name) + extra
    (one_code, one), (four_code, four) = wait_workers(start_workers(list(runs.values())))
    assert one_code == 0 and four_code == 0, (one, four)
    pieces = 'arcface_loss/embedding_weights_0_4, arcface_loss/embedding_weights_4_4'
    assert 'arcface_loss/embedding_weights re-sharded from %s' % pieces in one
    assert 'arcface_loss/embedding_weights/Momentum re-sharded from' in one
    assert 'arcface_loss/embedding_weights_2_2 re-sharded from arcface_loss/embedding_weights_0_4' \
        in four
    for output in (one, four):
        steps = [int(s) for s in re.findall(r'total_step (\d+),', output)]
        assert steps == [STEPS + 1, STEPS + 2], output


def test_workers_without_a_shared_checkpoint_folder_stop_before_training(tiny_data,
                                                                         tmp_path):
    """Each worker writes its blocks into --ckpt_path: one that does not see rank 0's
    folder stops at start-up with one line (exit 2), and rank 0 then stops too."""
    root = str(tmp_path)
    commands = worker_commands(tiny_data, root, None, ['--partial_fc', 'True',
                                                       '--peer_timeout', '4'],
                               names=['rank_0', 'rank_1'])
    (code_0, out_0), (code_1, out_1) = wait_workers(start_workers(commands))
    assert code_1 == 2, out_1
    errors = [line for line in out_1.splitlines() if 'does not see' in line]
    assert len(errors) == 1 and ('--ckpt_path %s: rank 1 does not see rank 0\'s checkpoint '
                                 'folder' % os.path.join(root, 'rank_1', 'ckpt')) in errors[0]
    assert code_0 == 1 and 'worker 1 (127.0.0.1:' in out_0, out_0
    assert 'total_step' not in out_0 + out_1


# ---------------------------------------------------------------- HCCL ranks (stand-in)

def test_two_hccl_ranks_with_a_sharded_head_train_the_data_parallel_model(tiny_data,
                                                                          tmp_path):
    root = str(tmp_path)
    pairs = {}
    for name, extra in (('sharded', ['--partial_fc', 'True']), ('data_parallel', [])):
        os.makedirs(os.path.join(root, name + '_ranks'))
        pairs[name] = start_ranks(tmp_path / (name + '_ranks'), [
            '--tfrecords_file_path', tiny_data['records'], '--eval_db_path', tiny_data['raw'],
            '--image_size', '32,32', '--device', 'npu'] + COMPARED + outputs(root, name) + extra)
    results = {name: finish(ranks) for name, ranks in pairs.items()}
    for name, ranks in results.items():
        for code, output, _ in ranks:
            assert code == 0, (name, output)
    # Data parallel on HCCL, each rank logs the loss of its own batch (the adapter averages
    # the gradients only): the global batch's is their mean, known to the logged digits.
    ranks = [logged(output) for _, output, _ in results['data_parallel']]
    mean = {tag: list(np.mean([rank[tag] for rank in ranks], axis=0)) for tag in REPORTED}
    assert_same_training(root, 'sharded', 'data_parallel', mean, atol=0.0051)
    calls = results['sharded'][1][2]  # rank 1's record of the adapter's API
    gathers = [c for c in calls if c['api'] == 'hccl_ops.allgather']
    assert gathers and all(c['rank_size'] == 2 for c in gathers)
    assert {c['reduction'] for c in calls if c['api'] == 'hccl_ops.allreduce'} == {'sum', 'max'}
    # The blocks' gradients are not averaged: no NPUDistributedOptimizer; the overflow
    # check still spans the ranks.
    wrappers = [c for c in calls if c['api'].startswith('NPU')]
    assert [c['api'] for c in wrappers] == ['NPULossScaleOptimizer'], wrappers
    assert wrappers[0]['is_distributed'] is True
    broadcast = {name for c in calls if c['api'] == 'hccl_ops.broadcast' for name in c['tensors']}
    assert not [name for name in broadcast if HEAD.match(name.split(':')[0].split('/read')[0])]
