"""Two HCCL ranks as two real processes, over the npu_bridge STAND-IN's HCCL.

The stand-in builds hccl_ops on TensorFlow collective ops between the rank
processes (loopback gRPC), so what 8 cards need is checked with 2: every rank
starts from rank 0's variables, the ranks stay identical, and a rank that has a
reason to stop (a signal, a non-finite loss, its input failing) stops all of
them at the same step. Proves the wiring, not HCCL itself (see test/npu_standin/README.md).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from conftest import PROJECT_ROOT, free_port_base, npu_environ, truncate_jpeg  # noqa: E402
from test_npu_wiring import STANDIN_PATH, flags, rank_table, tiny_data  # noqa: F401 (fixture)


def start_ranks(tmp_path, argv, size=2, **env):
    """Starts `size` train_nets.py processes as HCCL ranks; returns [(Popen, log path, record)]."""
    table = rank_table(str(tmp_path / 'rank_table.json'), size)
    base = str(free_port_base(size))
    ranks = []
    for rank in range(size):
        environ = npu_environ(PYTHONPATH=os.pathsep.join([STANDIN_PATH, PROJECT_ROOT]),
                              RANK_SIZE=str(size), RANK_ID=str(rank),
                              ASCEND_DEVICE_ID=str(rank), JOB_ID='10087', RANK_TABLE_FILE=table,
                              NPU_STANDIN_HCCL_BASE_PORT=base,
                              NPU_STANDIN_RECORD=str(tmp_path / ('record_%d.json' % rank)),
                              **env)
        log = str(tmp_path / ('rank_%d.log' % rank))
        with open(log, 'w') as out:
            process = subprocess.Popen([sys.executable, 'train_nets.py'] + argv,
                                       cwd=PROJECT_ROOT, env=environ, stdout=out,
                                       stderr=subprocess.STDOUT)
        ranks.append((process, log, environ['NPU_STANDIN_RECORD']))
    return ranks


def finish(ranks, timeout=300):
    """Waits for every rank; returns [(exit code, log text, stand-in record)]."""
    deadline = time.time() + timeout
    results = []
    try:
        for process, log, record in ranks:
            code = process.wait(timeout=max(1, deadline - time.time()))
            with open(log) as text:
                output = text.read()
            calls = []
            if os.path.isfile(record):
                with open(record) as recorded:
                    calls = json.load(recorded)
            results.append((code, output, calls))
    finally:
        for process, _, _ in ranks:
            if process.poll() is None:
                process.kill()
    return results


def variables_at_close(calls):
    closes = [c for c in calls if c['api'] == 'Session.close' and c.get('variables')]
    assert closes, [c['api'] for c in calls]
    return closes[-1]['variables']


def identical_but_batch_norm_statistics(first, second):
    """Every variable equal on both ranks except BN moving statistics, which each rank
    averages over its own batches (as Horovod and Huawei's ModelZoo do; rank 0's are saved)."""
    different = sorted(name for name in first if first[name] != second[name])
    statistics = sorted(name for name in first if name.endswith(('/moving_mean',
                                                                 '/moving_variance')))
    assert statistics and different == statistics, different
    return True


def last_step(output):
    steps = re.findall(r'total_step (\d+),', output)
    return int(steps[-1]) if steps else None


def test_two_ranks_start_alike_and_stay_identical(tiny_data, tmp_path):
    out = str(tmp_path / 'out')
    results = finish(start_ranks(tmp_path, flags(tiny_data, out, '--max_steps', '3',
                                                 '--validate_interval', '3')))
    for rank, (code, output, _) in enumerate(results):
        assert code == 0, output
        assert 'rank %d of 2: all variables broadcast from rank 0' % rank in output
        assert last_step(output) == 3
    assert 'Accuracy-Flip' in results[0][1] and 'Accuracy-Flip' not in results[1][1]
    calls = results[1][2]  # rank 1: the adapter's distributed wrappers, inside out
    assert [c['api'] for c in calls if c['api'].startswith('NPU')] == [
        'NPUDistributedOptimizer', 'NPULossScaleOptimizer']
    outer = [c for c in calls if c['api'] == 'NPULossScaleOptimizer'][0]
    assert outer['inner'] == 'NPUDistributedOptimizer' and outer['is_distributed'] is True
    expected = [c for c in calls if c['api'] == 'tf.global_variables'][0]['names']
    broadcast = [name for c in calls if c['api'] == 'hccl_ops.broadcast'
                 for name in c['tensors']]
    assert sorted(broadcast) == expected  # every global variable, once
    assert any(name.startswith('global_step') for name in broadcast)
    first, second = (variables_at_close(calls) for _, _, calls in results)
    assert sorted(first) == sorted(second)
    assert any('embedding_weights' in name for name in first)
    assert identical_but_batch_norm_statistics(first, second)
    # Each rank trained on its own shard: their losses differ, their weights do not.
    losses = [re.findall(r'total loss is ([0-9.]+)', output) for _, output, _ in results]
    assert losses[0] != losses[1]


def wait_for(path, pattern, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path) as text:
            if re.search(pattern, text.read()):
                return
        time.sleep(0.2)
    raise AssertionError('%s never showed %r' % (path, pattern))


def test_a_signal_to_one_rank_stops_both_at_the_same_step(tiny_data, tmp_path):
    out = str(tmp_path / 'out')
    ranks = start_ranks(tmp_path, flags(tiny_data, out, '--max_steps', '500',
                                        '--validate_interval', '500', '--ckpt_interval', '500'))
    try:
        wait_for(ranks[1][1], r'total_step 2,')
        ranks[1][0].send_signal(signal.SIGTERM)
    finally:
        results = finish(ranks)
    stopped = []
    for code, output, _ in results:
        assert code == 128 + signal.SIGTERM, output
        match = re.search(r'stopped by signal 15 at step (\d+)', output)
        assert match, output
        stopped.append(int(match.group(1)))
    assert stopped[0] == stopped[1] < 500
    checkpoints = sorted(name for name in os.listdir(os.path.join(out, 'ckpt'))
                         if name.endswith('.index'))
    assert checkpoints == ['InsightFace_iter_%d.ckpt.index' % stopped[0]]


def test_a_non_finite_loss_on_one_rank_stops_both_without_a_checkpoint(tiny_data, tmp_path):
    """float32 (no loss scaling): the loss of rank 1 turns NaN at its 3rd step."""
    out = str(tmp_path / 'out')
    results = finish(start_ranks(
        tmp_path, flags(tiny_data, out, '--max_steps', '50', '--precision_mode', 'force_fp32',
                        '--validate_interval', '50', '--ckpt_interval', '50'),
        NPU_STANDIN_NAN_AT='1:3'))
    lines = []
    for code, output, _ in results:
        assert code == 1, output
        match = re.search(r'non-finite loss \((.*?)\) at step (\d+): stopping; no checkpoint',
                          output)
        assert match, output
        lines.append(match.groups())
    assert lines[0] == ('on another rank', '3') and lines[1][1] == '3'
    assert lines[1][0] in ('nan', 'inf')
    assert not [name for name in os.listdir(os.path.join(out, 'ckpt')) if name.endswith('.index')]


def test_a_failing_input_on_one_rank_stops_both_with_rank_0s_checkpoint(tiny_data, tmp_path):
    """Rank 1 reads shard 1 (one file per rank), where a record does not decode."""
    data = str(tmp_path / 'data')
    shutil.copytree(tiny_data, data)
    truncate_jpeg(os.path.join(data, 'tfrecords'), shard=1, record=2)
    out = str(tmp_path / 'out')
    results = finish(start_ranks(
        tmp_path, flags(data, out, '--max_steps', '50', '--max_bad_records', '0',
                        '--validate_interval', '50', '--ckpt_interval', '50')))
    steps = []
    for code, output, _ in results:
        assert code == 1, output
        match = re.search(r'training stopped at step (\d+): (.*)', output)
        assert match, output
        steps.append(int(match.group(1)))
    assert 'another rank\'s input failed' in results[0][1]
    assert 'more than --max_bad_records 0 bad records (1; the last: ' in results[1][1]
    assert steps[0] == steps[1] < 50
    checkpoints = sorted(name for name in os.listdir(os.path.join(out, 'ckpt'))
                         if name.endswith('.index'))
    assert checkpoints == ['InsightFace_iter_%d.ckpt.index' % steps[0]]


@pytest.mark.skipif(tf.__version__.startswith('1.'), reason=(
    "TensorFlow 1.15's collectives over gRPC, which the stand-in's HCCL is made of, wait for "
    "a killed peer without end (a real HCCL fails after HCCL_EXEC_TIMEOUT)"))
def test_a_killed_rank_stops_the_other_with_one_line(tiny_data, tmp_path):
    """kill -9 of rank 1 mid-run, Partial FC sharding the head over both ranks: rank 0 stops
    with one line and exit 1, and its latest checkpoint is one both ranks wrote their blocks
    for (the lost rank's block cannot be saved). The stand-in's collectives fail as soon as
    the lost rank's port refuses; a real HCCL's after HCCL_EXEC_TIMEOUT (docs/distributed.md).
    """
    out = str(tmp_path / 'out')
    ranks = start_ranks(tmp_path, flags(tiny_data, out, '--max_steps', '100000',
                                        '--validate_interval', '100000', '--ckpt_interval', '2',
                                        '--partial_fc', 'True', '--peer_timeout', '4'))
    try:
        wait_for(ranks[0][1], r'total_step 5,')
        ranks[1][0].kill()
        killed_at = time.time()
        code = ranks[0][0].wait(timeout=120)
        waited = time.time() - killed_at
    finally:
        results = finish(ranks)
    output = results[0][1]
    assert code == 1, output
    stopped = [line for line in output.splitlines() if 'training stopped' in line]
    assert len(stopped) == 1, output
    # The step fails at once; the error stop then waits --peer_timeout for the lost rank's
    # blocks and names the last checkpoint both ranks completed.
    assert waited < 4 + 30, waited
    assert re.search(r"training stopped at step \d+: .*rank 1's blocks .* did not appear "
                     r"within 4 s: that rank stopped or was lost", stopped[0]), stopped[0]
    latest = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    assert stopped[0].endswith('the last checkpoint is %s' % latest), stopped[0]
    assert tf.train.load_variable(latest, 'global_step') >= 4
    head = sorted(name for name, _ in tf.train.list_variables(latest)
                  if name.startswith('arcface_loss/embedding_weights'))
    assert head == ['arcface_loss/embedding_weights_0_4',
                    'arcface_loss/embedding_weights_0_4/Momentum',
                    'arcface_loss/embedding_weights_4_4',
                    'arcface_loss/embedding_weights_4_4/Momentum'], head
    assert not [name for name in os.listdir(os.path.join(out, 'ckpt')) if '.part-' in name]
