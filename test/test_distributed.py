"""distributed.py with two real worker processes on 127.0.0.1: TensorFlow's gRPC runtime.

The equivalence test starts this file twice as a worker (`python
test/test_distributed.py worker ...`): each builds test_parallel's training
step on its own half of test_parallel.batches() (the same images in another
order, other labels: batch-norm statistics equal the whole batch's while
the gradients differ), initialises with its own seed, takes rank 0's values
by broadcast, trains with all-reduced gradients, and saves its variables.
This process then trains once on the whole batch from rank 0's initial
values and compares. The CLI test runs two workers of train_nets_mgpu.py
(flags, two CPU towers each), then resumes them as train_nets.py (TF_CONFIG):
checkpoints from rank 0 only, resume, and a signal to one worker stopping
both after the same step.
Every process stops by itself; the test kills any still running at its
deadline.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from devices import distributed

from conftest import PROJECT_ROOT  # noqa: E402
THIS_FILE = os.path.abspath(__file__)
WORKER_TIMEOUT = 240  # seconds; a hung collective fails the test instead of blocking it


def free_ports(count):
    """Ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(('127.0.0.1', 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_workers(commands, envs=None):
    """Starts one process per command, its output going to a temporary file (a pipe
    that nobody reads while another worker is awaited could fill and stall both)."""
    envs = envs or [None] * len(commands)
    procs = []
    for command, env in zip(commands, envs):
        log = tempfile.TemporaryFile(mode='w+')
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, universal_newlines=True)
        proc.log = log
        procs.append(proc)
    return procs


def output_of(proc):
    """Everything the process has written so far."""
    proc.log.seek(0)
    return proc.log.read()


def wait_workers(procs):
    """Waits for the processes (killing any still running at WORKER_TIMEOUT);
    returns [(returncode, output)]."""
    try:
        for proc in procs:
            proc.wait(timeout=WORKER_TIMEOUT)
        return [(proc.returncode, output_of(proc)) for proc in procs]
    finally:
        stop_workers(procs)


def stop_workers(procs):
    """Kills those of the processes still running (by their own Popen handle)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- cluster specification ----

def test_flags_give_the_cluster():
    cluster = distributed.parse_cluster('127.0.0.1:2222,127.0.0.1:2223', 1, environ={})
    assert cluster == distributed.Cluster(['127.0.0.1:2222', '127.0.0.1:2223'], 1)
    assert distributed.worker_device(cluster) == '/job:worker/replica:0/task:1'


def test_tf_config_gives_the_cluster_and_flags_win():
    env = {'TF_CONFIG': json.dumps({'cluster': {'worker': ['a:1', 'b:2', 'c:3']},
                                    'task': {'type': 'worker', 'index': 2}})}
    assert distributed.parse_cluster(environ=env) == distributed.Cluster(['a:1', 'b:2', 'c:3'], 2)
    assert distributed.parse_cluster('x:1,y:2', 0, environ=env).hosts == ['x:1', 'y:2']


def test_no_cluster_or_one_worker_is_a_single_process():
    assert distributed.parse_cluster(environ={}) is None
    assert distributed.parse_cluster('127.0.0.1:2222', 0, environ={}) is None


@pytest.mark.parametrize('hosts,index,env,message', [
    ('a:1,b:2', None, {}, '--task_index is missing'),
    (None, 1, {}, '--task_index 1 needs --worker_hosts'),
    ('a:1,b:2', 2, {}, '--task_index 2 is out of range for 2 workers'),
    ('a:1,b', 0, {}, "'b' is not host:port"),
    ('a:1,a:1', 0, {}, 'lists a worker twice'),
    (None, None, {'TF_CONFIG': '{"cluster": {}}'}, 'TF_CONFIG is not'),
    (None, None, {'TF_CONFIG': json.dumps({'cluster': {'worker': ['a:1'], 'ps': ['b:2']},
                                           'task': {'type': 'worker', 'index': 0}})},
     'only a "worker" job'),
])
def test_bad_cluster_specs_are_refused(hosts, index, env, message):
    with pytest.raises(ValueError) as error:
        distributed.parse_cluster(hosts, index, environ=env)
    assert message in str(error.value) and '\n' not in str(error.value)


# ---- a lost peer ----

def listening_port():
    """A server socket on 127.0.0.1 that accepts (and closes) every connection, as a
    worker's gRPC server answers; close it to play a killed worker."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)

    def accept():
        while True:
            try:
                listener.accept()[0].close()
            except OSError:  # closed
                return
    threading.Thread(target=accept, daemon=True).start()
    return listener


def test_peer_watch_reports_a_peer_whose_port_closed_and_only_it():
    listeners = [listening_port() for _ in range(2)]
    hosts = ['127.0.0.1:1'] + ['127.0.0.1:%d' % l.getsockname()[1] for l in listeners]
    lost = []
    watch = distributed.PeerWatch(distributed.Cluster(hosts, 0), 1.0,
                                  lambda *args: lost.append((time.time(),) + args),
                                  probe_seconds=0.1).start()
    try:
        time.sleep(1.5)
        assert lost == []  # both peers answer (hosts[0] is this worker: never probed)
        listeners[1].shutdown(socket.SHUT_RDWR)
        listeners[1].close()
        closed = time.time()
        time.sleep(2.0)
    finally:
        watch.stop()
        listeners[0].close()
    assert len(lost) == 1, lost
    when, rank, host, seconds = lost[0]
    assert (rank, host) == (2, hosts[2]) and seconds == 1 and 0.85 <= when - closed < 1.6


def test_a_stopped_peer_watch_reports_nothing():
    watch = distributed.PeerWatch(distributed.Cluster(['127.0.0.1:1', '127.0.0.1:2'], 0),
                                  0.2, lambda *args: pytest.fail('reported %s' % (args,)),
                                  probe_seconds=0.05).start()
    watch.stop()
    time.sleep(0.5)


# ---- two workers against one process on the combined batch ----

def worker_main(argv):
    """One worker of test_two_workers_equal_one_process_on_the_combined_batch."""
    import test_parallel as tp  # this file's directory is on sys.path when run as a script
    parser = argparse.ArgumentParser()
    parser.add_argument('--hosts', required=True)
    parser.add_argument('--rank', type=int, required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)
    tf.disable_v2_behavior()
    cluster = distributed.Cluster(args.hosts.split(','), args.rank)
    images, labels = tp.batches()
    part = slice(args.rank * len(images) // 2, (args.rank + 1) * len(images) // 2)
    with tf.Graph().as_default(), distributed.device_scope(cluster):
        tf.set_random_seed(1 + args.rank)  # each worker initialises differently
        collectives = distributed.Collectives(cluster)
        losses, train_op = tp.build_step(images[part], labels[part],
                                         combine_fn=collectives.all_reduce_mean)
        variables = tf.global_variables()
        broadcast = collectives.broadcast_variables()
        barrier = collectives.barrier()
        config = tf.ConfigProto()
        server = distributed.start_server(cluster, config, wait_seconds=60)
        with tf.Session(server.target, config=config) as sess:
            sess.run(tf.global_variables_initializer(), tp.initial_feed(variables))
            own = dict(zip([v.op.name for v in variables], sess.run(variables)))
            sess.run(broadcast)
            start = dict(zip([v.op.name for v in variables], sess.run(variables)))
            values, first = tp.run_steps(sess, losses, train_op)
            distributed.leave(sess, barrier)
    arrays = {}
    for prefix, named in (('own', own), ('start', start), ('values', values)):
        arrays.update({'%s:%s' % (prefix, name): value for name, value in named.items()})
    arrays.update({'losses:%s' % name: value for name, value in first.items()})
    arrays['bessel'] = json.dumps(tp.bessel_counts(train_op))
    np.savez(os.path.join(args.out, 'worker_%d.npz' % args.rank), **arrays)
    return 0


def load_worker(path):
    run = {'own': {}, 'start': {}, 'values': {}, 'losses': {}}
    with np.load(path) as data:
        for key in data.files:
            if key == 'bessel':
                run['bessel'] = json.loads(str(data[key]))
            else:
                prefix, name = key.split(':', 1)
                run[prefix][name] = data[key]
    return run


def worker_flags(data, out, *extra):
    """Each worker gets its own output folders: no shared file system."""
    return ['--tfrecords_file_path', data['records'], '--eval_db_path', data['raw'],
            '--eval_datasets', 'lfw', '--image_size', '32,32', '--net_depth', '18',
            '--batch_size', '4', '--eval_batch_size', '8', '--buffer_size', '16',
            '--ckpt_path', os.path.join(out, 'ckpt'), '--summary_path',
            os.path.join(out, 'summary'), '--log_file_path', os.path.join(out, 'logs'),
            '--lr_values', '0.01,0.001', '--lr_steps', '1000', '--show_info_interval', '1',
            '--validate_interval', '100', '--device', 'cpu', '--seed', '5'] + list(extra)


SCRIPT = os.path.join(PROJECT_ROOT, 'train_nets.py')
MGPU_SCRIPT = os.path.join(PROJECT_ROOT, 'train_nets_mgpu.py')


@pytest.fixture(scope='module')
def launched(tmp_path_factory, tiny_data):
    """Starts the equivalence workers and the first two-worker train_nets.py run together.

    Graph building is single-threaded Python, so four processes at once keep
    both cores busy; the tests then wait for the processes they check.
    """
    out = str(tmp_path_factory.mktemp('workers'))
    hosts = ','.join('127.0.0.1:%d' % port for port in free_ports(2))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PROJECT_ROOT,
                                                       os.path.dirname(THIS_FILE)]))
    equivalence = start_workers([[sys.executable, THIS_FILE, 'worker', '--hosts', hosts,
                                  '--rank', str(rank), '--out', out] for rank in (0, 1)],
                                [env, env])
    cli_root = str(tmp_path_factory.mktemp('cli'))
    cli_outs = [os.path.join(cli_root, 'worker_%d' % rank) for rank in (0, 1)]
    cli_hosts = ['127.0.0.1:%d' % port for port in free_ports(2)]
    # Towers inside workers: train_nets_mgpu.py, 2 CPU towers of 4 images per worker.
    cli = start_workers([[sys.executable, MGPU_SCRIPT] + worker_flags(
        tiny_data, cli_outs[rank], '--max_steps', '2', '--worker_hosts', ','.join(cli_hosts),
        '--task_index', str(rank), '--devices', '/cpu:0,/cpu:1', '--batch_size', '8',
        '--log_device_mapping', 'True')
        for rank in (0, 1)])
    try:
        yield {'equivalence': equivalence, 'equivalence_out': out, 'cli': cli,
               'cli_outs': cli_outs, 'cli_hosts': cli_hosts}
    finally:
        stop_workers(equivalence + cli)  # nothing outlives the module


def test_two_workers_equal_one_process_on_the_combined_batch(launched):
    import test_parallel as tp
    for code, output in wait_workers(launched['equivalence']):
        assert code == 0, output
    first, second = [load_worker(os.path.join(launched['equivalence_out'], 'worker_%d.npz' % r))
                     for r in (0, 1)]
    # Different seeds, then the broadcast: both start from rank 0's variables.
    name = 'resnet_v1_18/conv1/W_conv2d'
    assert np.abs(first['own'][name] - second['own'][name]).max() > 1e-2
    assert all(np.array_equal(first['start'][n], second['start'][n]) for n in first['start'])
    # All-reduced gradients: both apply the same updates, bit for bit.
    trained, moving = tp.variable_groups(first['values'])
    between = max(float(np.abs(first['values'][n] - second['values'][n]).max()) for n in trained)
    assert between == 0.0

    images, labels = tp.batches()
    single = tp.train_steps(images, labels, None, first['start'])
    initial = first['start']
    trained_error = tp.update_error(single, first, initial, trained)
    moving_error = tp.update_error(single, first, initial, moving)
    diff = tp.max_abs_diff(single['values'], first['values'])
    print('\n2 workers vs 1 process on the combined batch, %d Momentum steps: max |difference| '
          '%.2g (all variables but the moving variances); update error %.2g (weights and '
          'slots), %.2g (moving statistics); max |worker 0 - worker 1| %.2g (weights and slots)'
          % (tp.STEPS, diff, trained_error, moving_error, between))
    assert trained_error < 1e-3 and moving_error < 1e-3 and diff < 1e-3
    assert first['values']['global_step'] == tp.STEPS
    # The reported losses are the means over both workers: the whole batch's.
    for key in ('total', 'inference', 'weight_decay', 'accuracy'):
        np.testing.assert_allclose(first['losses'][key], single['losses'][key], rtol=1e-5)
        assert first['losses'][key] == second['losses'][key]


# ---- the command line as two workers ----

def test_cli_runs_as_two_workers_checkpoints_on_rank_0_and_resumes(tiny_data, launched):
    outs, hosts = launched['cli_outs'], launched['cli_hosts']
    first = wait_workers(launched['cli'])
    for code, output in first:
        assert code == 0, output
        assert re.search(r'epoch 0, total_step 2, total loss is [\d.]+', output), output
    # Both log the same losses: the means over the workers.
    losses = [re.findall(r'step \d+, total loss is ([\d.]+)', output) for _, output in first]
    assert losses[0] == losses[1]
    assert 'worker 1 of 2: server grpc://' in first[1][1]
    assert re.search(r'clone_1/\S+: \(Conv2D\): /job:worker/replica:0/task:1/device:CPU:1',
                     first[1][1])
    assert '[lfw][2]Accuracy-Flip' in first[0][1] and '[lfw]' not in first[1][1]
    latest = tf.train.latest_checkpoint(os.path.join(outs[0], 'ckpt'))
    assert latest.endswith('InsightFace_iter_2.ckpt')
    assert not os.path.exists(outs[1])  # rank 1 writes nothing

    # Resume with train_nets.py (one device per worker: the tower run's checkpoint has the
    # same names), the cluster given by TF_CONFIG: rank 0 restores, rank 1 (no checkpoint
    # of its own) initialises, and the broadcast gives it rank 0's variables. Then SIGTERM
    # to rank 1 alone stops both after the same step, and rank 0 saves a checkpoint there.
    envs = [dict(os.environ, TF_CONFIG=json.dumps({
        'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': rank}}))
        for rank in (0, 1)]
    procs = start_workers([[sys.executable, SCRIPT] + worker_flags(
        tiny_data, outs[rank], '--max_steps', '100000') for rank in (0, 1)], envs)
    try:
        deadline = time.time() + WORKER_TIMEOUT
        while not re.search(r'step 4,', output_of(procs[0])) and procs[0].poll() is None:
            assert time.time() < deadline, output_of(procs[0])
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=WORKER_TIMEOUT) for proc in procs]
    finally:
        stop_workers(procs)
    second = [output_of(proc) for proc in procs]
    for code, output in zip(codes, second):
        assert code == 128 + signal.SIGTERM, output
        assert 'all variables broadcast from rank 0' in output
        assert re.search(r'step 3,', output) and not re.search(r'step [12],', output), output
    assert 'resumed from %s' % latest in second[0] and 'resumed from' not in second[1]
    stopped = [re.search(r'stopped by signal 15 at step (\d+)', output) for output in second]
    assert stopped[0] and stopped[1], second
    assert stopped[0].group(1) == stopped[1].group(1)
    step = int(stopped[0].group(1))
    assert tf.train.load_variable(tf.train.latest_checkpoint(os.path.join(outs[0], 'ckpt')),
                                  'global_step') == step
    assert not os.path.exists(outs[1])



@pytest.mark.parametrize('killed,sharded', [(0, False), (1, False), (1, True)])
def test_a_killed_worker_stops_the_other_within_peer_timeout(tiny_data, tmp_path, killed,
                                                             sharded):
    """kill -9 of one worker mid-run (as the kernel's OOM killer does): the other, waiting
    for it inside a step, stops within --peer_timeout and a probe, with one line naming the
    lost worker and exit 1; worker 0's latest checkpoint is complete (with --partial_fc,
    a merged checkpoint of both workers' blocks: the lost worker's cannot be saved)."""
    outs = [str(tmp_path / ('worker_%d' % rank)) for rank in (0, 1)]
    hosts = ['127.0.0.1:%d' % port for port in free_ports(2)]
    # Partial FC: both write their blocks into one checkpoint folder.
    shared = ['--partial_fc', 'True', '--ckpt_path', os.path.join(outs[0], 'ckpt')] \
        if sharded else []
    procs = start_workers([[sys.executable, SCRIPT] + worker_flags(
        tiny_data, outs[rank], '--max_steps', '100000', '--worker_hosts', ','.join(hosts),
        '--task_index', str(rank), '--ckpt_interval', '2', '--peer_timeout', '4', *shared)
        for rank in (0, 1)])
    survivor = procs[1 - killed]
    try:
        deadline = time.time() + WORKER_TIMEOUT
        while not re.search(r'step 5,', output_of(survivor)):
            assert survivor.poll() is None and time.time() < deadline, output_of(survivor)
            time.sleep(0.2)
        procs[killed].kill()
        killed_at = time.time()
        code = survivor.wait(timeout=120)
        waited = time.time() - killed_at
    finally:
        stop_workers(procs)
    output = output_of(survivor)
    assert code == 1, output
    stopped = [line for line in output.splitlines() if 'training stopped' in line]
    assert len(stopped) == 1, output
    # TensorFlow reports the refused connection within a step or two; a peer that stops
    # answering without refusing is left to --peer_timeout (test_peer_watch_...).
    assert re.search(r'training stopped (at|after) step \d+: worker %d \(%s\) (stopped '
                     r'answering|has not answered)' % (killed, re.escape(hosts[killed])),
                     stopped[0]), stopped[0]
    assert waited < 4 + 30, waited
    if killed == 1:  # the chief survives: its latest checkpoint is complete and named
        latest = tf.train.latest_checkpoint(os.path.join(outs[0], 'ckpt'))
        assert stopped[0].endswith(latest), stopped[0]
        step = tf.train.load_variable(latest, 'global_step')
        assert step >= 4 and latest.endswith('InsightFace_iter_%d.ckpt' % step)
        head = sorted(name for name, _ in tf.train.list_variables(latest)
                      if name.startswith('arcface_loss/embedding_weights'))
        assert head == (['arcface_loss/embedding_weights_0_4',
                         'arcface_loss/embedding_weights_0_4/Momentum',
                         'arcface_loss/embedding_weights_4_4',
                         'arcface_loss/embedding_weights_4_4/Momentum'] if sharded else
                        ['arcface_loss/embedding_weights',
                         'arcface_loss/embedding_weights/Momentum']), head
    else:
        assert stopped[0].endswith('rank 0 keeps the checkpoints'), stopped[0]
        assert not os.path.exists(outs[1])

if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'worker':  # PYTHONPATH: the project and test/
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit('usage: %s worker --hosts h:p,h:p --rank i --out dir (pytest runs the tests)'
             % sys.argv[0])
