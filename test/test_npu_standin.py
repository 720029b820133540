"""The npu_bridge STAND-IN (test/npu_standin) is as strict as Huawei's adapter.

Every rule here is one the real adapter enforces (facts in
../shared/reference/npu_bridge_api.md); a permissive stand-in fails these
tests. The last test proves that the stand-in's HCCL crosses processes: two
rank processes broadcast, all-reduce and train identical weights over
loopback gRPC. What the stand-in proves is wiring, not an NPU.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.python.client import session as session_lib

from conftest import PROJECT_ROOT, free_port_base

STANDIN_PATH = os.path.join(PROJECT_ROOT, 'test', 'npu_standin')
HCCL_ENV = ('RANK_SIZE', 'RANK_ID', 'RANK_TABLE_FILE', 'POD_NAME', 'JOB_ID', 'CM_WORKER_SIZE',
            'NPU_STANDIN_OVERFLOW_CALLS', 'NPU_STANDIN_ADAPTER', 'NPU_STANDIN_RECORD', 'TF_CONFIG')


def _purge():
    for name in [n for n in sys.modules if n == 'npu_bridge' or n.startswith('npu_bridge.')]:
        del sys.modules[name]


@pytest.fixture
def load(monkeypatch):
    """load(adapter='r1.5+', **env): imports the stand-in in that mode; yields a loader.

    Teardown removes the Session wrapper, the modules and the sys.path entry, so
    the rest of the pytest session sees plain TensorFlow.
    """
    for name in HCCL_ENV:
        monkeypatch.delenv(name, raising=False)
    sys.path.insert(0, STANDIN_PATH)

    def loader(adapter='r1.5+', **env):
        _purge()
        monkeypatch.setenv('NPU_STANDIN_ADAPTER', adapter)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        import npu_bridge
        from npu_bridge import standin
        return standin

    try:
        yield loader
    finally:
        if 'npu_bridge._session' in sys.modules:
            sys.modules['npu_bridge._session'].uninstall()
        sys.path.remove(STANDIN_PATH)
        _purge()


def npu_config(**params):
    """A ConfigProto whose NpuOptimizer carries params ({key: (kind, value)})."""
    config = tf.ConfigProto()
    custom = config.graph_options.rewrite_options.custom_optimizers.add()
    custom.name = 'NpuOptimizer'
    custom.parameter_map['use_off_line'].b = True
    for key, (kind, value) in params.items():
        setattr(custom.parameter_map[key], kind, value)
    return config


def write_rank_table(path, devices):
    table = {'status': 'completed', 'version': '1.0', 'server_count': '1', 'server_list': [
        {'server_id': '127.0.0.1', 'device': [
            {'device_id': str(i), 'device_ip': '192.168.1.%d' % i, 'rank_id': str(i)}
            for i in range(devices)]}]}
    with open(path, 'w') as out:
        json.dump(table, out)
    return str(path)


def test_session_wrapper_is_undone_by_the_fixture(load):
    load()
    assert hasattr(session_lib.Session.__init__, '_npu_standin_original')
    sys.modules['npu_bridge._session'].uninstall()
    assert not hasattr(session_lib.Session.__init__, '_npu_standin_original')
    assert 'run' not in vars(session_lib.Session)


def test_unknown_adapter_mode_is_refused_at_import(load):
    with pytest.raises(ImportError, match="NPU_STANDIN_ADAPTER='r9'"):
        load('r9')


# ---------------------------------------------------------------- signatures and checks

def test_fixed_loss_scale_below_one_is_refused(load):
    load()
    from npu_bridge.estimator.npu.npu_loss_scale_manager import FixedLossScaleManager
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='loss scale must be at least 1.'):
            FixedLossScaleManager(0.5)
        assert not FixedLossScaleManager(1, enable_overflow_check=False) \
            .get_enable_overflow_check()


def test_before_r1_5_signatures_lack_the_later_arguments(load):
    load('before-r1.5')
    from npu_bridge.estimator.npu.npu_loss_scale_manager import FixedLossScaleManager
    from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
    from npu_bridge import npu_init
    from npu_bridge.estimator.npu import npu_plugin
    with tf.Graph().as_default():
        with pytest.raises(TypeError):
            FixedLossScaleManager(2.0, enable_overflow_check=False)
        with pytest.raises(TypeError):
            NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.1),
                                    is_weight_update_sharding=False)
    assert not hasattr(npu_init, 'npu_config_proto')
    assert not hasattr(npu_plugin, 'is_inf_nan_enabled')


def test_unexpected_keywords_are_type_errors(load):
    load()
    from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
    from npu_bridge.estimator.npu.npu_config import NPURunConfig
    from npu_bridge.hccl import hccl_ops
    with tf.Graph().as_default():
        with pytest.raises(TypeError):
            NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.1), average=True)
        with pytest.raises(TypeError):
            NPURunConfig(iterations_per_loops=2)
        with pytest.raises(TypeError):
            hccl_ops.broadcast([tf.constant(1.0)], root_rank=0, rank=0)


def test_dropout_rules(load):
    load()
    from npu_bridge.estimator import npu_ops
    with tf.Graph().as_default():
        x = tf.ones([8, 4])
        with pytest.raises(ValueError, match='floating point'):
            npu_ops.dropout(tf.ones([2], tf.int32), 0.5)
        for bad in (0.0, 1.5, -1):
            with pytest.raises(ValueError, match=r'range \(0, 1\]'):
                npu_ops.dropout(x, bad)
        assert npu_ops.dropout(x, 1.0) is x          # a Python float 1.0 short-circuits
        assert npu_ops.dropout(x, 1) is not x        # int 1 does not
        with pytest.raises(TypeError):
            npu_ops.dropout(tf.ones([2], tf.float64), 0.5)
        with pytest.raises(TypeError):
            npu_ops.dropout(x, tf.constant(0.5, tf.float16))
        half = npu_ops.dropout(tf.ones([2], tf.float16), tf.constant(0.5, tf.float16))
        kept = npu_ops.dropout(tf.ones([1000]), 0.5, seed=1)
        with tf.Session() as sess:
            values = sess.run(kept)
            assert half.dtype == tf.float16
        assert set(np.unique(values)) <= {0.0, 2.0} and 300 < np.sum(values == 2.0) < 700


def test_dropout_refuses_eager_execution():
    code = textwrap.dedent('''
        import sys; sys.path.insert(0, %r)
        import tensorflow.compat.v1 as tf
        tf.enable_eager_execution()
        from npu_bridge.estimator import npu_ops
        try:
            npu_ops.dropout(tf.ones([2]), 0.5)
        except RuntimeError as error:
            print('refused:', error)
        ''' % STANDIN_PATH)
    out = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert 'refused: npu_ops.dropout() is not compatible with eager execution.' in out.stdout, \
        out.stderr


def test_hccl_op_dtypes_and_reductions(load):
    load()
    from npu_bridge.hccl import hccl_ops
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match='float64'):
            hccl_ops.allreduce(tf.constant(1.0, tf.float64), 'sum')
        with pytest.raises(ValueError, match='mean'):
            hccl_ops.allreduce(tf.constant(1.0), 'mean')
        hccl_ops.allreduce(tf.constant(1, tf.int64), 'sum')    # r1.15+
        # HcomAllGather: its own dtypes (no int64 on every adapter), no scalars, and the
        # job's rank size (one rank here: HCCL is off).
        with pytest.raises(TypeError, match='HcomAllGather has DataType int64'):
            hccl_ops.allgather(tf.constant([1], tf.int64), 1)
        with pytest.raises(ValueError, match='at least rank 1'):
            hccl_ops.allgather(tf.constant(1.0), 1)
        with pytest.raises(ValueError, match='rank_size 2 but 1 rank'):
            hccl_ops.allgather(tf.constant([1.0]), 2)
        with pytest.raises(ValueError, match='greater than 0'):
            hccl_ops.allgather(tf.constant([1.0]), 0)
        assert hccl_ops.allgather(tf.zeros([3, 2]), 1).get_shape().as_list() == [3, 2]
        with pytest.raises(TypeError):
            hccl_ops.broadcast(tf.constant(1.0), 0)              # takes a list
        out = hccl_ops.broadcast([tf.constant(1.0)], 0)
        assert isinstance(out, list) and len(out) == 1
    load('before-r1.5')
    from npu_bridge.hccl import hccl_ops as old
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match='int64'):
            old.allreduce(tf.constant(1, tf.int64), 'sum')


# ---------------------------------------------------------------- loss scaling per adapter

def _loss_scale_graph(standin, manager='fixed'):
    from npu_bridge.estimator.npu import npu_loss_scale_manager as managers
    from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
    step = tf.train.get_or_create_global_step()
    w = tf.Variable(1.0, name='w')
    if manager == 'fixed':
        lsm = managers.FixedLossScaleManager(8.0)
    else:
        lsm = managers.ExponentialUpdateLossScaleManager(2.0 ** 10, 100, decr_every_n_nan_or_inf=1)
    opt = NPULossScaleOptimizer(tf.train.GradientDescentOptimizer(0.1), lsm)
    with tf.name_scope('outer'):
        train = opt.minimize(w * w, global_step=step)
    return train, step, w, lsm


@pytest.mark.parametrize('adapter,flag', [
    ('r1.5+', 'outer/overflow_status_reduce_all:0'),
    ('before-r1.5', 'outer/All:0'),
    ('inf-nan', None),
])
def test_overflow_flag_name_per_adapter(load, adapter, flag):
    standin = load(adapter)
    with tf.Graph().as_default() as graph:
        _loss_scale_graph(standin)
        names = {op.name for op in graph.get_operations()}
        recorded = standin.calls('overflow_flag')[0]['flag']
        if flag is None:
            assert not [n for n in names if 'overflow_status_reduce_all' in n]
            assert 'NPULossScaleOptimizermodule' not in ' '.join(names)
        else:
            assert recorded == flag
            assert 'overflow_status_reduce_all' not in ' '.join(names) or adapter == 'r1.5+'


@pytest.mark.parametrize('adapter', ['r1.5+', 'before-r1.5', 'inf-nan'])
def test_forced_overflow_skips_the_update_and_lowers_the_scale(load, adapter):
    standin = load(adapter, NPU_STANDIN_OVERFLOW_CALLS='2')
    with tf.Graph().as_default():
        train, step, w, lsm = _loss_scale_graph(standin, manager='exponential')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            seen = []
            for _ in range(3):
                sess.run(train)
                seen.append(sess.run([step, w, lsm.get_loss_scale()]))
    assert [s[0] for s in seen] == [1, 1, 2]               # run 2 overflowed: no step
    assert seen[0][1] == seen[1][1] != seen[2][1]          # nor a weight update
    assert np.allclose([s[2] for s in seen], [1024.0, 819.2, 819.2])  # scale update ran


def test_keep_dtype_scope_tags_ops_like_the_adapter(load):
    standin = load()
    from npu_bridge.estimator.npu import npu_scope
    with tf.Graph().as_default():
        x = tf.constant([1.0, 2.0])
        with npu_scope.keep_dtype_scope():
            y = tf.nn.l2_normalize(x)
        z = tf.identity(y)
        assert y.op.get_attr('_keep_dtype') == 1
        with pytest.raises(ValueError):
            z.op.get_attr('_keep_dtype')
    assert standin.calls('npu_scope.keep_dtype_scope')


# ---------------------------------------------------------------- session config

@pytest.mark.parametrize('params,message', [
    ({'precision_mode': ('s', b'fp16')}, "'fp16' is invalid, it should be one of the list"),
    ({'precision_mode_v2': ('s', b'allow_mix_precision')}, 'is invalid'),
    ({'iterations_per_loop': ('s', b'10')}, 'iterations_per_loop must >= 1'),
    ({'enable_data_pre_proc': ('i', 1)}, r"parameter_map\['enable_data_pre_proc'\] is given as .i"),
    ({'graph_memory_max_size': ('i', 2 ** 30)}, 'reads .s'),
    ({'precison_mode': ('s', b'force_fp32')}, "unknown key 'precison_mode'"),
])
def test_bad_npu_optimizer_parameters_are_refused_at_session_creation(load, params, message):
    load()
    with tf.Graph().as_default():
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            tf.Session(config=npu_config(**params))


def test_precision_mode_is_unchecked_before_r1_12(load):
    standin = load('before-r1.5')
    with tf.Graph().as_default():
        with tf.Session(config=npu_config(precision_mode=('s', b'fp16'))):
            pass
    assert standin.calls('Session')[0]['parameter_map']['precision_mode'] == 'fp16'


def test_eight_card_rank_table_stops_a_one_card_session(load, tmp_path):
    load(RANK_TABLE_FILE=write_rank_table(tmp_path / 'table.json', 8), RANK_ID='0')
    with tf.Graph().as_default():
        with pytest.raises(tf.errors.InternalError, match='lists 8 devices but RANK_SIZE=1'):
            tf.Session(config=npu_config())
        with tf.Session():  # not an NPU session: no HCCL
            pass


def test_hccl_needs_a_rank_id(load, tmp_path):
    load(RANK_TABLE_FILE=write_rank_table(tmp_path / 'table.json', 2), RANK_SIZE='2')
    with tf.Graph().as_default():
        with pytest.raises(tf.errors.InternalError, match='neither RANK_ID nor POD_NAME'):
            tf.Session(config=npu_config())


def test_distributed_optimizer_needs_job_id(load):
    load(RANK_SIZE='2')
    from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
    with tf.Graph().as_default():
        w = tf.Variable(1.0)
        opt = NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.1))
        with pytest.raises(AttributeError):
            opt.compute_gradients(w * w)


def test_npu_estimator_derives_the_session_config(load, monkeypatch):
    standin = load()
    from npu_bridge.estimator.npu.npu_config import NPURunConfig
    from npu_bridge.estimator.npu.npu_estimator import NPUEstimator
    with pytest.raises(ValueError, match='NPUConfigs'):
        NPUEstimator(config=tf.ConfigProto())
    run_config = NPURunConfig(iterations_per_loop=10, precision_mode='allow_mix_precision',
                              graph_memory_max_size=31 * 2 ** 30, variable_memory_max_size=2 ** 30)
    with pytest.raises(ValueError, match='JOB_ID'):
        NPUEstimator(config=run_config)
    monkeypatch.setenv('JOB_ID', '10086')
    estimator = NPUEstimator(config=run_config)
    config = estimator.config.session_config
    rewrite = config.graph_options.rewrite_options
    assert list(rewrite.optimizers)[-1] == 'GradFusionOptimizer'
    assert [c.name for c in rewrite.custom_optimizers] == ['NpuOptimizer']
    params = rewrite.custom_optimizers[0].parameter_map
    assert params['use_off_line'].b is True
    assert params['iterations_per_loop'].i == 10
    assert params['enable_data_pre_proc'].b is True and params['mix_compile_mode'].b is False
    assert params['precision_mode'].s == b'allow_mix_precision'
    assert params['graph_memory_max_size'].s == str(31 * 2 ** 30).encode()
    assert params['variable_memory_max_size'].s == str(2 ** 30).encode()
    assert params['hcom_parallel'].b is True
    with tf.Graph().as_default():
        with tf.Session(config=config):  # what NPUEstimator derives passes the session checks
            pass
    assert standin.calls('Session')[0]['parameter_map']['iterations_per_loop'] == 10
    with pytest.raises(TypeError, match='mix_compile_mode'):
        NPURunConfig(mix_compile_mode=1)
    with pytest.raises(ValueError, match='must be 1 with "mix_compile_mode"'):
        NPURunConfig(iterations_per_loop=2, mix_compile_mode=True)
    with pytest.raises(TypeError, match='must be int'):
        NPURunConfig(iterations_per_loop=2.0)


# ---------------------------------------------------------------- loop sinking

def _counting_graph():
    step = tf.train.get_or_create_global_step()
    return step, tf.assign_add(step, 1).op


def test_set_iteration_per_loop_argument_checks(load):
    load()
    from npu_bridge.estimator.npu import util
    with tf.Graph().as_default():
        step, train_op = _counting_graph()
        with tf.Session(config=npu_config()) as sess:
            with pytest.raises(ValueError, match="need type is 'Operation'"):
                util.set_iteration_per_loop(sess, step.read_value(), 2)
            with pytest.raises(AttributeError):
                util.set_iteration_per_loop(sess, 'train', 2)
            with pytest.raises(TypeError, match='iterations_per_loop must be int'):
                util.set_iteration_per_loop(sess, train_op, 2.0)
            with pytest.raises(ValueError, match='iterations_per_loop must be positive, got 0'):
                util.set_iteration_per_loop(sess, train_op, 0)
            assert util.set_iteration_per_loop(sess, train_op, 1) is train_op


def test_iteration_op_runs_n_steps_per_sess_run(load):
    standin = load()
    from npu_bridge.estimator.npu import util
    config = npu_config(iterations_per_loop=('i', 4), enable_data_pre_proc=('b', True))
    with tf.Graph().as_default() as graph:
        step, train_op = _counting_graph()
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            op = util.set_iteration_per_loop(sess, train_op, 4)
            assert op.name == 'IterationOp'
            loop_vars = graph.get_collection(tf.GraphKeys.LOCAL_VARIABLES)
            assert sorted(v.op.name for v in loop_vars) == [
                'npu_runconfig/iterations_per_loop', 'npu_runconfig/loop_cond',
                'npu_runconfig/one', 'npu_runconfig/zero']
            assert all(v.dtype.base_dtype == tf.int64 for v in loop_vars)
            assert sess.run([v for v in loop_vars if 'iterations' in v.op.name])[0] == 3
            sess.run(op)
            sess.run(op)
            assert sess.run(step) == 8
            with pytest.raises(tf.errors.InvalidArgumentError, match='No feed_dict data'):
                sess.run(op, feed_dict={step: 0})
            assert sess.run(train_op) is None and sess.run(step) == 9  # plain op: one step
    assert [c['iterations'] for c in standin.calls('IterationOp.run')] == [4, 4]


def test_iteration_op_needs_the_same_n_and_data_pre_proc_in_the_session(load):
    load()
    from npu_bridge.estimator.npu import util
    for config, message in [(npu_config(iterations_per_loop=('i', 2),
                                        enable_data_pre_proc=('b', True)), 'both must be'),
                            (npu_config(iterations_per_loop=('i', 3)), 'enable_data_pre_proc')]:
        with tf.Graph().as_default():
            _, train_op = _counting_graph()
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                looped = util.IterationPerLoop()
                op = looped.create_iteration_per_loop_var(train_op)
                looped.load_iteration_per_loop_var(sess, 3)
                with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                    sess.run(op)


def test_one_shot_iterator_with_loop_sinking_aborts_the_process():
    code = textwrap.dedent('''
        import sys; sys.path.insert(0, %r)
        import tensorflow.compat.v1 as tf
        tf.disable_eager_execution()
        import npu_bridge
        from npu_bridge.estimator.npu import util
        config = tf.ConfigProto()
        custom = config.graph_options.rewrite_options.custom_optimizers.add()
        custom.name = 'NpuOptimizer'
        custom.parameter_map['iterations_per_loop'].i = 2
        custom.parameter_map['enable_data_pre_proc'].b = True
        batch = tf.data.Dataset.range(100).make_one_shot_iterator().get_next()
        step = tf.train.get_or_create_global_step()
        train_op = tf.assign_add(step, batch).op
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            op = util.set_iteration_per_loop(sess, train_op, 2)
            sess.run(op)
        print('not aborted')
        ''' % STANDIN_PATH)
    env = {k: v for k, v in os.environ.items() if k not in HCCL_ENV}
    out = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=120, env=env)
    assert out.returncode != 0 and 'not aborted' not in out.stdout
    assert 'only support 1 when using OneShotIterator' in out.stderr


# ---------------------------------------------------------------- HCCL across processes

RANK_SCRIPT = '''
import json, os, sys
sys.path.insert(0, %(standin)r)
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()
import npu_bridge
from npu_bridge.hccl import hccl_ops
from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
from npu_bridge.estimator.npu.npu_loss_scale_manager import FixedLossScaleManager

rank = int(os.environ['RANK_ID'])
w = tf.Variable(np.full([3], rank + 1.0, np.float32), name='w')
step = tf.train.get_or_create_global_step()
received = hccl_ops.broadcast([w.read_value(), step.read_value()], 0)
broadcast = tf.group([tf.assign(v, t) for v, t in zip([w, step], received)])
summed = hccl_ops.allreduce(tf.constant([rank + 1.0, 10.0 * rank]), 'sum')
largest = hccl_ops.allreduce(tf.constant(rank + 5, tf.int32), 'max')
gathered = hccl_ops.allgather(tf.constant([[rank + 1.0, -rank]], tf.float32), 2)
labels = hccl_ops.allgather(tf.constant([rank, 7 * rank], tf.int32), 2)
x = tf.constant(np.random.RandomState(rank).randn(4, 3).astype(np.float32))  # per-rank data
loss = tf.reduce_sum(tf.square(tf.matmul(x, tf.reshape(w, [3, 1]))))
opt = NPULossScaleOptimizer(NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.01)),
                            FixedLossScaleManager(16.0), is_distributed=True)
grads = opt.compute_gradients(loss)
train = opt.apply_gradients(grads, global_step=step)
config = tf.ConfigProto()
custom = config.graph_options.rewrite_options.custom_optimizers.add()
custom.name = 'NpuOptimizer'
custom.parameter_map['use_off_line'].b = True
with tf.Session(config=config) as sess:
    sess.run(tf.global_variables_initializer())
    before = sess.run(w)
    sess.run(broadcast)
    after = sess.run(w)
    values = sess.run([summed, largest, gathered, labels])
    for _ in range(3):
        sess.run(train)
    print(json.dumps({'before': before.tolist(), 'after': after.tolist(),
                      'sum': values[0].tolist(), 'max': int(values[1]),
                      'gathered': values[2].tolist(), 'labels': values[3].tolist(),
                      'w': sess.run(w).tolist(), 'step': int(sess.run(step))}))
'''


def test_hccl_crosses_processes(tmp_path):
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT % {'standin': STANDIN_PATH})
    table = write_rank_table(tmp_path / 'rank_table_2p.json', 2)
    base = free_port_base(2)
    env = {k: v for k, v in os.environ.items() if k not in HCCL_ENV}
    ranks = []
    for rank in (0, 1):
        ranks.append(subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, env=dict(
                env, RANK_SIZE='2', RANK_ID=str(rank), RANK_TABLE_FILE=table, JOB_ID='7',
                NPU_STANDIN_HCCL_BASE_PORT=str(base))))
    results = []
    for process in ranks:
        try:
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    assert first['before'] == [1.0] * 3 and second['before'] == [2.0] * 3
    assert first['after'] == second['after'] == [1.0] * 3           # rank 0's values
    assert first['sum'] == second['sum'] == [3.0, 10.0]
    assert first['max'] == second['max'] == 6
    assert first['gathered'] == second['gathered'] == [[1.0, 0.0], [2.0, -1.0]]  # rank order
    assert first['labels'] == second['labels'] == [0, 0, 1, 7]
    assert first['w'] == second['w'] != [1.0] * 3                   # identical after training
    assert first['step'] == second['step'] == 3
