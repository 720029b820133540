"""STAND-IN internals: HCCL modelled with TensorFlow collective ops over loopback gRPC.

The real adapter starts HCCL (Huawei's collective library) when
RANK_TABLE_FILE is non-empty and RANK_SIZE (1 if unset) is positive. Here
every rank process of a RANK_SIZE > 1 job runs a tf.distribute.Server on
127.0.0.1:<NPU_STANDIN_HCCL_BASE_PORT + rank>, and hccl_ops become collective
ops among those servers, pinned to /job:worker/replica:0/task:<rank>/device:CPU:0.
Every rank builds the same graph in the same order, so instance keys handed
out in creation order agree across ranks.
"""
import json
import logging
import os
import socket
import time

import tensorflow.compat.v1 as tf

JOB = 'worker'
GROUP_KEY = 1                 # one group: hccl_world_group
DEFAULT_BASE_PORT = 29950     # NPU_STANDIN_HCCL_BASE_PORT when unset
PEER_WAIT_SECONDS = 300

_SERVER = {}                  # (rank, size, base_port) -> tf.distribute.Server, kept for life


def hccl_enabled(environ=None):
    """The adapter's rule: RANK_TABLE_FILE non-empty and RANK_SIZE (1 if unset) > 0."""
    env = os.environ if environ is None else environ
    return bool(env.get('RANK_TABLE_FILE')) and _int_env(env, 'RANK_SIZE', '1') > 0


def rank_size(environ=None):
    """RANK_SIZE as an int (1 if unset)."""
    env = os.environ if environ is None else environ
    return _int_env(env, 'RANK_SIZE', '1')


def collective_world():
    """(rank, size) when hccl ops must cross processes, else None (one rank: identities)."""
    if not hccl_enabled() or rank_size() <= 1:
        return None
    return this_rank(), rank_size()


def this_rank(environ=None):
    """RANK_ID, else POD_NAME (the adapter passes one of them to HCCL); error if neither."""
    env = os.environ if environ is None else environ
    for name in ('RANK_ID', 'POD_NAME'):
        if env.get(name, '') != '':
            try:
                return int(env[name])
            except ValueError:
                raise hccl_error('%s=%r is not a rank number' % (name, env[name]))
    raise hccl_error('HCCL is on (RANK_TABLE_FILE=%s, RANK_SIZE=%s) but neither RANK_ID nor '
                     'POD_NAME is set' % (env.get('RANK_TABLE_FILE'), env.get('RANK_SIZE', '1')))


def device(rank):
    """Where this rank's collective ops run."""
    return '/job:%s/replica:0/task:%d/device:CPU:0' % (JOB, rank)


def next_instance_key(graph):
    """Collective instance keys in creation order, per graph (same order on every rank)."""
    key = getattr(graph, '_npu_standin_instance_key', 0) + 1
    graph._npu_standin_instance_key = key
    return key


def hccl_error(message):
    """The error a failed HCCL initialisation surfaces as (GE init fails at session creation)."""
    return tf.errors.InternalError(None, None, 'npu_bridge STAND-IN: HCCL init failed: ' + message)


def _int_env(env, name, default):
    text = env.get(name, default)
    try:
        return int(text)
    except ValueError:
        raise hccl_error('%s=%r is not an integer' % (name, text))


def read_rank_table(path):
    """Reads a rank table of format 1.0; returns {rank_id: device_id}.

    Raises the HCCL error for a missing file or a table that is not format 1.0.
    """
    try:
        with open(path) as handle:
            table = json.load(handle)
    except (OSError, ValueError) as error:
        raise hccl_error('RANK_TABLE_FILE=%s cannot be read as JSON (%s)' % (path, error))
    ranks = {}
    try:
        if table['version'] != '1.0' or table['status'] != 'completed':
            raise hccl_error('RANK_TABLE_FILE=%s: version %r status %r; expected "1.0" and '
                             '"completed"' % (path, table['version'], table['status']))
        for server in table['server_list']:
            for dev in server['device']:
                rank = int(dev['rank_id'])
                if rank in ranks:
                    raise hccl_error('RANK_TABLE_FILE=%s lists rank_id %d twice' % (path, rank))
                ranks[rank] = int(dev['device_id'])
    except (KeyError, TypeError, ValueError) as error:
        raise hccl_error('RANK_TABLE_FILE=%s is not a rank table of format 1.0 (%s: %s)'
                         % (path, type(error).__name__, error))
    if int(table.get('server_count', len(table['server_list']))) != len(table['server_list']):
        raise hccl_error('RANK_TABLE_FILE=%s: server_count %s but %d servers listed'
                         % (path, table.get('server_count'), len(table['server_list'])))
    return ranks


def init_for_session(target, config):
    """What HCCL initialisation does to a new NPU session.

    Returns (target, config): unchanged with HCCL off or one rank; for
    RANK_SIZE > 1 the target of this rank's server and a copy of config with
    the collective group leader and this rank's device filter.
    Raises the HCCL error for an environment HCCL would fail (or hang) on.
    """
    if not hccl_enabled():
        return target, config
    size = rank_size()
    path = os.environ['RANK_TABLE_FILE']
    ranks = read_rank_table(path)
    if len(ranks) != size:
        raise hccl_error('RANK_TABLE_FILE=%s lists %d devices but RANK_SIZE=%d (a real HCCL '
                         'waits for the missing ranks, then times out)' % (path, len(ranks), size))
    if sorted(ranks) != list(range(size)):
        raise hccl_error('RANK_TABLE_FILE=%s has rank_ids %s; expected 0..%d'
                         % (path, sorted(ranks), size - 1))
    rank = this_rank()
    if rank not in ranks:
        raise hccl_error('rank %d is not in RANK_TABLE_FILE=%s (rank_ids %s)'
                         % (rank, path, sorted(ranks)))
    if not os.environ.get('JOB_ID'):
        logging.warning('npu_bridge STAND-IN: JOB_ID is not set (the adapter warns too)')
    if size == 1:
        return target, config
    server_config = _collective_config(tf.ConfigProto(), rank)
    server = _start_server(rank, size, server_config)
    session_config = tf.ConfigProto()
    if config is not None:
        session_config.CopyFrom(config)
    _collective_config(session_config, rank)
    return (server.target if not target else target), session_config


def _collective_config(config, rank):
    config.experimental.collective_group_leader = '/job:%s/replica:0/task:0' % JOB
    del config.device_filters[:]
    config.device_filters.append('/job:%s/task:%d' % (JOB, rank))
    return config


def _start_server(rank, size, config):
    base = int(os.environ.get('NPU_STANDIN_HCCL_BASE_PORT', DEFAULT_BASE_PORT))
    key = (rank, size, base)
    if key not in _SERVER:
        hosts = ['127.0.0.1:%d' % (base + i) for i in range(size)]
        spec = tf.train.ClusterSpec({JOB: hosts})
        _SERVER[key] = tf.distribute.Server(spec, job_name=JOB, task_index=rank, config=config,
                                            start=True)
        _wait_for([h for i, h in enumerate(hosts) if i != rank])
    return _SERVER[key]


def _wait_for(hosts):
    deadline = time.time() + PEER_WAIT_SECONDS
    for host in hosts:
        name, _, port = host.rpartition(':')
        while True:
            try:
                socket.create_connection((name, int(port)), timeout=1.0).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise hccl_error('rank at %s did not start within %d s'
                                     % (host, PEER_WAIT_SECONDS))
                time.sleep(0.1)
