"""Several machines on GPUs or CPUs: TensorFlow's own gRPC runtime and collective ops.

Every worker process runs the same graph on its own shard of the data, with
its own tf.train.Server and a session on that server's target. The cluster
comes from `--worker_hosts host:port,... --task_index i`, or from the
TF_CONFIG environment variable that tf.distribute uses:

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}'

Worker i is rank i; rank 0 (the chief) writes checkpoints, summaries and
validation logs. Synchronous data parallelism, with no parameter server:
  * the gradients (and the reported losses) are averaged by a collective
    all-reduce (`collective_ops.all_reduce`, a ring over gRPC), so every worker
    applies the same update to its own copy of the variables;
  * after initialisation or restore, rank 0's variables (weights, optimizer
    slots, batch-norm statistics, global step) are broadcast to the others,
    so all workers start identical even without a shared file system;
  * batch-norm moving averages stay per worker (each from its own batches,
    like tower 0 of parallel.py); the checkpoint holds rank 0's.

The collective ops run on each worker's CPU: the gRPC ring moves host memory
anyway, and one device type keeps every worker in one collective group.
`tensorflow.python.ops.collective_ops` is private API; the calls used here
(`all_reduce(t, group_size, group_key, instance_key, merge_op, final_op)`,
`all_gather(t, group_size, group_key, instance_key)`,
`broadcast_send(t, shape, dtype, group_size, group_key, instance_key)`,
`broadcast_recv(shape, dtype, group_size, group_key, instance_key)`) have these
signatures in TF 1.15.5 and 2.21 (checked), and the worker's collective
leader must be in the *server's* config (ConfigProto.experimental.
collective_group_leader), or the first collective waits forever.

Typical use (trainer.py does this):
    cluster = parse_cluster(args.worker_hosts, args.task_index)
    with device_scope(cluster):
        collectives = Collectives(cluster)
        ... parallel.build_train_op(..., combine_fn=collectives.all_reduce_mean)
        broadcast = collectives.broadcast_variables()
        barrier = collectives.barrier()
        server = start_server(cluster, config)
        with tf.Session(server.target, config=config) as sess:
            ... restore or initialise; sess.run(broadcast); train ...
            leave(sess, barrier)
"""
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time

import tensorflow.compat.v1 as tf
from tensorflow.python.ops import collective_ops

JOB = 'worker'
TF_CONFIG = 'TF_CONFIG'
GROUP_KEY = 1             # one collective group: the CPUs of all workers
PEER_WAIT_SECONDS = 600   # how long a worker waits for the others to start
FINAL_BARRIER_MS = 30000  # the last barrier's deadline (a peer may already be gone)
PEER_TIMEOUT_SECONDS = 300  # --peer_timeout's default: a lost worker stops the others
PEER_PROBE_SECONDS = 2.0    # how often PeerWatch knocks on each peer's server port

Cluster = collections.namedtuple('Cluster', [
    'hosts',  # ['host:port', ...], one per worker; the index is the rank
    'rank',   # this worker's index in hosts
])


def parse_cluster(worker_hosts=None, task_index=None, environ=None):
    """The cluster from --worker_hosts/--task_index, else from TF_CONFIG.

    Args:
      worker_hosts: None, or a comma-separated 'host:port,host:port' string
        or a list of 'host:port'.
      task_index: this worker's index in worker_hosts.
      environ: mapping holding TF_CONFIG; None: os.environ.
    Returns:
      Cluster, or None for a single process (no flags, no TF_CONFIG, or a
      cluster of one worker).
    Raises:
      ValueError: a one-line message naming the flag or variable at fault.
    """
    env = os.environ if environ is None else environ
    if worker_hosts:
        hosts = _host_list(worker_hosts, '--worker_hosts')
        if task_index is None:
            raise ValueError('--worker_hosts lists %d workers but --task_index is missing: '
                             'give this worker\'s index, 0..%d' % (len(hosts), len(hosts) - 1))
        where = '--task_index'
    elif task_index is not None:
        raise ValueError('--task_index %d needs --worker_hosts host:port,host:port,...'
                         % task_index)
    elif env.get(TF_CONFIG):
        hosts, task_index = _from_tf_config(env[TF_CONFIG])
        where = 'TF_CONFIG task.index'
    else:
        return None
    if not 0 <= task_index < len(hosts):
        raise ValueError('%s %d is out of range for %d workers: expected 0..%d'
                         % (where, task_index, len(hosts), len(hosts) - 1))
    if len(hosts) == 1:
        return None
    return Cluster(hosts, task_index)


def _host_list(hosts, where):
    if isinstance(hosts, str):
        hosts = hosts.split(',')
    hosts = [h.strip() for h in hosts]
    for host in hosts:
        name, _, port = host.rpartition(':')
        if not name or not port.isdigit():
            raise ValueError('%s: %r is not host:port' % (where, host))
    if len(set(hosts)) != len(hosts):
        raise ValueError('%s lists a worker twice: %s' % (where, ','.join(hosts)))
    return hosts


def _from_tf_config(text):
    try:
        spec = json.loads(text)
        cluster, task = spec['cluster'], spec['task']
        jobs = sorted(cluster)
        task_type, index = task['type'], int(task['index'])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError('TF_CONFIG is not {"cluster": {"worker": [...]}, "task": {"type": '
                         '"worker", "index": i}} (%s: %s)' % (type(error).__name__, error))
    if jobs != [JOB] or task_type != JOB:
        raise ValueError('TF_CONFIG has jobs %s and task type %r; only a "worker" job is '
                         'supported (every worker trains; worker 0 is the chief)'
                         % (jobs, task_type))
    return _host_list(cluster[JOB], 'TF_CONFIG cluster.worker'), index


def worker_device(cluster):
    """'/job:worker/replica:0/task:<rank>', or None without a cluster."""
    if cluster is None:
        return None
    return '/job:%s/replica:0/task:%d' % (JOB, cluster.rank)


def device_scope(cluster):
    """Pins the ops built inside to this worker's task (no-op without a cluster)."""
    if cluster is None:
        return contextlib.nullcontext()  # tf.device(None) would clear the caller's device
    return tf.device(worker_device(cluster))


def collective_config(config, cluster):
    """Adds the collective group leader (rank 0) and this worker's device filter.

    The same ConfigProto must start the server (start_server) and the session.

    Args:
      config: tf.ConfigProto, changed in place.
      cluster: Cluster, or None (config returned unchanged).
    Returns:
      config.
    """
    if cluster is None:
        return config
    config.experimental.collective_group_leader = '/job:%s/replica:0/task:0' % JOB
    del config.device_filters[:]
    config.device_filters.append('/job:%s/task:%d' % (JOB, cluster.rank))
    return config


def start_server(cluster, config, wait_seconds=PEER_WAIT_SECONDS):
    """Starts this worker's gRPC server and waits until every peer's port answers.

    Args:
      cluster: Cluster, or None (nothing to start).
      config: the session's tf.ConfigProto, device counts included; gains the
        collective settings (collective_config) and starts the server too.
      wait_seconds: give up waiting for the peers after this long.
    Returns:
      the tf.train.Server, whose `target` is the session target (keep a
      reference while the session runs); None without a cluster.
    Raises:
      RuntimeError: a peer did not start in time.
    """
    if cluster is None:
        return None
    collective_config(config, cluster)
    spec = tf.train.ClusterSpec({JOB: list(cluster.hosts)})
    server = tf.distribute.Server(spec, job_name=JOB, task_index=cluster.rank, config=config,
                                  start=True)
    logging.info('worker %d of %d: server %s', cluster.rank, len(cluster.hosts), server.target)
    wait_for_workers([h for i, h in enumerate(cluster.hosts) if i != cluster.rank],
                     wait_seconds)
    return server


def wait_for_workers(hosts, wait_seconds=PEER_WAIT_SECONDS):
    """Returns once a TCP connection to every 'host:port' succeeds.

    TensorFlow retries on its own, but loudly; this keeps start-up logs quiet
    and bounded.
    """
    deadline = time.time() + wait_seconds
    for host in hosts:
        logged = False
        while not _answers(host, 1.0):
            if time.time() > deadline:
                raise RuntimeError('worker %s did not start within %d s' % (host, wait_seconds))
            if not logged:
                logging.info('waiting for worker %s', host)
                logged = True
            time.sleep(0.2)


def _answers(host, wait_seconds):
    """True when a TCP connection to 'host:port' succeeds within wait_seconds."""
    name, _, port = host.rpartition(':')
    try:
        socket.create_connection((name.strip('[]'), int(port)), timeout=wait_seconds).close()
        return True
    except OSError:
        return False


def _peers(cluster):
    """[(rank, 'host:port')] of the other workers."""
    return [(rank, host) for rank, host in enumerate(cluster.hosts) if rank != cluster.rank]


def unreachable_peers(cluster, wait_seconds=PEER_PROBE_SECONDS):
    """[(rank, 'host:port')] of the other workers whose server does not answer now."""
    return [(rank, host) for rank, host in _peers(cluster) if not _answers(host, wait_seconds)]


def exit_now(code):
    """Ends this process with `code` at once, its log lines written out: the way out of a
    main thread blocked inside TensorFlow waiting for a lost peer."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


def end_process_after(seconds, code):
    """Ends this process with `code` in `seconds` unless it has ended by then.

    After a peer is lost, closing a session on this worker's server can wait
    for the lost peer as a step would (TensorFlow retries it without end);
    this bounds it. A daemon thread: a process that ends first is not held.
    """
    timer = threading.Timer(seconds, exit_now, [code])
    timer.daemon = True
    timer.start()
    return timer


class PeerWatch(object):
    """Notices a worker that stopped answering, while this one may wait for it in a step.

    A collective op waits for its peers without a deadline, and TensorFlow's
    gRPC runtime retries a lost peer for as long as the process lives (seen:
    17 minutes, until killed by hand). A deadline per step would misfire: the
    others legitimately wait while the chief validates or saves. Instead a
    thread connects to every peer's server port every PEER_PROBE_SECONDS: a
    killed process's port refuses at once, a machine that is gone stops
    answering. A peer that has not answered for `timeout` seconds gets
    on_lost(rank, host, seconds) called, once, from the thread; it is expected
    not to return (the main thread is blocked inside TensorFlow).
    """

    def __init__(self, cluster, timeout, on_lost, probe_seconds=PEER_PROBE_SECONDS):
        self.peers = _peers(cluster)
        self.timeout = timeout
        self.on_lost = on_lost
        self.probe_seconds = min(probe_seconds, timeout / 2.0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name='peer_watch')
        self._thread.daemon = True

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stops watching (after the last step: the others may leave from then on)."""
        self._stopped.set()

    def _watch(self):
        last_seen = {rank: time.time() for rank, _ in self.peers}
        while not self._stopped.wait(self.probe_seconds):
            now = time.time()
            for rank, host in self.peers:
                if _answers(host, self.probe_seconds):
                    last_seen[rank] = now
                elif now - last_seen[rank] >= self.timeout and not self._stopped.is_set():
                    self._stopped.set()
                    self.on_lost(rank, host, int(now - last_seen[rank]))
                    return


class Collectives(object):
    """Collective ops among all workers, with instance keys that agree across them.

    Every worker builds the same graph in the same order, so numbering the
    collective instances in creation order gives matching keys everywhere.
    Build it (and its ops) inside device_scope(cluster).
    """

    def __init__(self, cluster):
        self.cluster = cluster
        self.size = len(cluster.hosts)
        self.device = worker_device(cluster) + '/device:CPU:0'
        self._next_key = 1

    def _instance_key(self):
        key = self._next_key
        self._next_key += 1
        return key

    def all_reduce_mean(self, tensors):
        """The element-wise mean of each tensor over all workers (parallel.py's combine_fn).

        Tensors of one dtype travel as one flat all-reduce.

        Args:
          tensors: list of Tensors with static shapes.
        Returns:
          list of Tensors, same order, shapes and dtypes.
        """
        results = [None] * len(tensors)
        by_dtype = collections.OrderedDict()
        for index, tensor in enumerate(tensors):
            by_dtype.setdefault(tensor.dtype.base_dtype, []).append(index)
        with tf.name_scope('all_reduce_mean'), tf.device(self.device):
            for dtype, indices in by_dtype.items():
                shapes = [tensors[i].get_shape() for i in indices]
                for i, shape in zip(indices, shapes):
                    assert shape.is_fully_defined(), 'all-reduce of %s: shape %s is not static' % (
                        tensors[i].name, shape)
                flat = tf.concat([tf.reshape(tensors[i], [-1]) for i in indices], axis=0)
                mean = collective_ops.all_reduce(flat, self.size, GROUP_KEY,
                                                 self._instance_key(), 'Add', 'Div')
                parts = tf.split(mean, [shape.num_elements() for shape in shapes])
                for i, shape, part in zip(indices, shapes, parts):
                    results[i] = tf.reshape(part, shape)
        return results

    def all_gather(self, tensor):
        """Every worker's tensor [n, ...] concatenated in rank order: [workers * n, ...]."""
        shape = tensor.get_shape()
        assert shape.is_fully_defined(), 'all-gather of %s: shape %s is not static' % (
            tensor.name, shape)
        with tf.name_scope('all_gather'), tf.device(self.device):
            # TF 1.15's collectives need their input on the collective's device.
            gathered = collective_ops.all_gather(tf.identity(tensor), self.size, GROUP_KEY,
                                                 self._instance_key())
        gathered.set_shape([self.size * tf.compat.dimension_value(shape[0])]
                           + shape[1:].as_list())
        return gathered

    def all_reduce(self, tensor, reduction):
        """The element-wise 'sum' or 'max' of a float tensor over all workers.

        TF 1.15's collective reduce only adds or multiplies: a max is an all-gather
        and a local max (the tensors reduced this way are a batch's few numbers).
        """
        shape = tensor.get_shape()
        if reduction == 'sum':
            with tf.name_scope('all_reduce_sum'), tf.device(self.device):
                result = collective_ops.all_reduce(tf.identity(tensor), self.size, GROUP_KEY,
                                                   self._instance_key(), 'Add', 'Id')
        elif reduction == 'max':
            stacked = self.all_gather(tensor[None])
            with tf.name_scope('all_reduce_max'), tf.device(self.device):
                result = tf.reduce_max(stacked, axis=0)
        else:
            raise ValueError('all_reduce: reduction %r; expected sum or max' % (reduction,))
        result.set_shape(shape)
        return result

    def broadcast_variables(self, variables=None):
        """One op that sets every variable to rank 0's value.

        Run it after initialisation or restore, before the first step.

        Args:
          variables: default tf.global_variables().
        Returns:
          a grouped op.
        """
        variables = tf.global_variables() if variables is None else variables
        assigns = []
        with tf.name_scope('broadcast_from_rank_0'), tf.device(self.device):
            for var in variables:
                dtype, shape, key = var.dtype.base_dtype, var.get_shape(), self._instance_key()
                if self.cluster.rank == 0:
                    assigns.append(collective_ops.broadcast_send(
                        tf.identity(var), shape, dtype, self.size, GROUP_KEY, key))
                else:
                    assigns.append(tf.assign(var, collective_ops.broadcast_recv(
                        shape, dtype, self.size, GROUP_KEY, key)))
        return tf.group(assigns, name='broadcast_from_rank_0')

    def barrier(self):
        """An op that completes once every worker has run it (a scalar all-reduce)."""
        with tf.name_scope('barrier'), tf.device(self.device):
            return collective_ops.all_reduce(tf.constant(0.0), self.size, GROUP_KEY,
                                             self._instance_key(), 'Add', 'Id').op


StopVote = collections.namedtuple('StopVote', [
    'request',    # float32 [len(signals) + 1] placeholder: this process's votes
    'set_votes',  # op storing `request` in the vote variable, read by every later step
    'agreed',     # fetched with each step: per reason, how many processes voted for it
    'reasons',    # the signal numbers, then INPUT_FAILED; `agreed` adds NON_FINITE_LOSS
])
INPUT_FAILED = 'input'
NON_FINITE_LOSS = 'non-finite loss'


def shared_stop(sum_fn, loss, signals=(signal.SIGINT, signal.SIGTERM)):
    """A decision to stop that every data-parallel process reads at the same step.

    A process that stopped alone (a signal, its input failing, a non-finite
    loss on its own data) would leave the others waiting in the next
    all-reduce until it times out. Instead each step all-reduces, beside the
    gradients, every process's votes: the stored ones (a signal, a failed
    input; see StopVote.set_votes) and whether this step's loss is finite.
    The votes live in a local variable, not a feed, so the same graph works
    when the NPU runs several steps per sess.run (loop sinking takes no
    feeds). TF 1.15's collective reduce only adds or multiplies, so the
    reasons travel as a vector of counts.

    Args:
      sum_fn: fn(float32 vector) -> the same vector summed (or averaged) over
        all processes: HCCL's all-reduce on the NPU, Collectives for gRPC workers.
      loss: this process's float loss of the step.
      signals: the signal numbers a process may vote for.
    Returns:
      StopVote.
    """
    reasons = tuple(signals) + (INPUT_FAILED,)
    votes = tf.Variable(tf.zeros([len(reasons)]), trainable=False, name='stop_votes',
                        collections=[tf.GraphKeys.LOCAL_VARIABLES])
    request = tf.placeholder(tf.float32, [len(reasons)], name='stop_request')
    set_votes = tf.assign(votes, request).op
    non_finite = tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.float32)
    agreed = sum_fn(tf.concat([votes.read_value(), tf.reshape(non_finite, [1])], axis=0))
    return StopVote(request, set_votes, agreed, reasons)


def read_agreement(stop_vote, agreed):
    """{reason: True} for each reason any process voted for, from a fetched `agreed`.

    Keys are StopVote.reasons plus NON_FINITE_LOSS.
    """
    return {reason: bool(count > 0)
            for reason, count in zip(stop_vote.reasons + (NON_FINITE_LOSS,), agreed)}


def vote_values(stop_vote, signum=None, input_failed=False):
    """The `request` value voting for a signal and/or a failed input."""
    return [1.0 if (reason == signum or (reason == INPUT_FAILED and input_failed)) else 0.0
            for reason in stop_vote.reasons]


def leave(sess, barrier):
    """Waits, after the last step, until every worker has finished it.

    Collective transfers are pulled by the receiver, so a worker that exits
    right after its last step can strand a peer still fetching from it. After
    this barrier every worker has finished all its training steps. A peer may
    exit before this worker's own barrier completes, which is then harmless:
    the error or deadline is logged and ignored.
    """
    try:
        sess.run(barrier, options=tf.RunOptions(timeout_in_ms=FINAL_BARRIER_MS))
    except tf.errors.OpError as error:
        logging.info('final barrier: %s (a peer had already left; training was complete)',
                     type(error).__name__)
