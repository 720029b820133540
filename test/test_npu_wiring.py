"""The Ascend NPU wiring, checked against the npu_bridge STAND-IN (test/npu_standin).

npu_bridge cannot run here; the stand-in records what runtime.py and trainer.py
ask of it and behaves enough like it on the CPU for real training runs with
--device npu. It is on sys.path only inside the `standin` fixture and in the
subprocesses started here. What these tests prove is the wiring (arguments,
order, variables, control flow), not that the real adapter accepts it.
"""
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from losses import objective
from devices import finite_flag, hccl_environment, npu_options, runtime
import train_nets
from data import mx2tfrecords
from data.make_synthetic_dataset import make_dataset

from conftest import PROJECT_ROOT, npu_environ  # noqa: E402
STANDIN_PATH = os.path.join(PROJECT_ROOT, 'test', 'npu_standin')
IMAGE_SIZE = (32, 32)


@pytest.fixture
def standin():
    """Puts the stand-in on sys.path for one test; yields its recorder module."""
    sys.path.insert(0, STANDIN_PATH)
    from npu_bridge import standin as recorder
    del recorder.CALLS[:]
    try:
        yield recorder
    finally:
        sys.path.remove(STANDIN_PATH)
        for name in [n for n in sys.modules if n == 'npu_bridge' or n.startswith('npu_bridge.')]:
            del sys.modules[name]


def only(recorder, api):
    calls = recorder.calls(api)
    assert len(calls) == 1, (api, recorder.CALLS)
    return calls[0]


# ---------------------------------------------------------------- session config

def test_npu_session_config_follows_huaweis_sess_run_setup():
    config = runtime.session_config('npu', npu_options.make('allow_mix_precision'))
    rewrite = config.graph_options.rewrite_options
    assert [op.name for op in rewrite.custom_optimizers] == ['NpuOptimizer']
    params = rewrite.custom_optimizers[0].parameter_map
    assert params['use_off_line'].b is True
    assert params['precision_mode'].s == b'allow_mix_precision'
    assert params['mix_compile_mode'].b is False
    # No loop sinking: one step per sess.run, GetNext on the host.
    assert params['iterations_per_loop'].i == 1 and params['enable_data_pre_proc'].b is False
    assert 'graph_memory_max_size' not in params and 'variable_memory_max_size' not in params
    assert rewrite.remapping == RewriterConfig.OFF
    # memory_optimization's OFF would mean MANUAL; "no memory optimisation" is NO_MEM_OPT.
    assert rewrite.memory_optimization == RewriterConfig.NO_MEM_OPT != RewriterConfig.OFF
    assert config.allow_soft_placement


def test_npu_session_config_options():
    params = runtime.session_config('npu', npu_options.make(
        'force_fp32', iterations_per_loop=10, graph_memory_max_size=31 * 2 ** 30,
        variable_memory_max_size=2 ** 30)).graph_options.rewrite_options.custom_optimizers[0] \
        .parameter_map
    assert params['precision_mode'].s == b'force_fp32'
    # Huawei: loop sinking in sess.run mode needs GetNext on the device too.
    assert params['iterations_per_loop'].i == 10 and params['enable_data_pre_proc'].b is True
    assert params['graph_memory_max_size'].s == str(31 * 2 ** 30).encode()
    assert params['variable_memory_max_size'].s == str(2 ** 30).encode()
    with pytest.raises(ValueError, match='--precision_mode .*allow_mix_precision'):
        npu_options.make('fp16')
    assert not runtime.session_config('cpu').graph_options.rewrite_options.custom_optimizers


def test_tensorflow_on_the_cpu_accepts_the_npu_config():
    """An unregistered custom optimizer is ignored, so the stand-in needs no config stripping."""
    with tf.Graph().as_default():
        value = tf.constant(2.0) * 3.0
        with tf.Session(config=runtime.session_config('npu')) as sess:
            assert sess.run(value) == 6.0


def npu_parameters(config):
    """{name: value} of the NpuOptimizer custom optimizer in a ConfigProto."""
    found = [op for op in config.graph_options.rewrite_options.custom_optimizers
             if op.name == 'NpuOptimizer']
    assert len(found) == 1, config
    return {name: getattr(value, value.WhichOneof('value'))
            for name, value in found[0].parameter_map.items()}


@pytest.mark.parametrize('options', [
    npu_options.make(),
    npu_options.make('allow_fp32_to_fp16', 100, graph_memory_max_size=2 ** 30),
    npu_options.make('force_fp32', 1, 31 * 2 ** 30, 2 ** 30),
])
def test_sess_run_and_npu_estimator_get_the_same_npu_options(standin, monkeypatch, options):
    """One NpuOptions makes both configs: NPUEstimator (the stand-in follows the real
    one) turns the NPURunConfig into exactly the NpuOptimizer parameters sess.run gets."""
    from npu_bridge.estimator.npu.npu_estimator import NPUEstimator
    monkeypatch.setenv('JOB_ID', '10087')  # NPUEstimator refuses to start without a job id
    ours = npu_parameters(runtime.session_config('npu', options))
    run_config = runtime.npu_run_config(options, '/tmp/model', 500)
    # NPUEstimator adds the NpuOptimizer itself.
    assert not run_config.session_config.graph_options.rewrite_options.custom_optimizers
    estimator = NPUEstimator(model_fn=lambda features, labels, mode: None, config=run_config)
    theirs = npu_parameters(estimator.config.session_config)
    assert {name: theirs.get(name) for name in ours} == ours
    assert ours['precision_mode'] == tf.compat.as_bytes(options.precision_mode)
    assert ours['iterations_per_loop'] == options.iterations_per_loop


# ---------------------------------------------------------------- device choice

def test_auto_picks_the_npu_when_npu_bridge_imports(standin):
    assert runtime.select_device('auto') == 'npu'
    assert runtime.select_device('npu') == 'npu'


def test_auto_falls_back_to_the_cpu_without_npu_bridge():
    if runtime.gpu_available():
        pytest.skip('this machine has a GPU')
    assert runtime.select_device('auto') == 'cpu'
    with pytest.raises(ValueError, match='npu_bridge is not importable'):
        runtime.select_device('npu')


def test_npu_dropout_is_npu_ops_dropout(standin):
    with tf.Graph().as_default():
        inputs = tf.ones([2, 8])
        output = runtime.dropout_fn('npu')(inputs, 0.4)
        assert only(standin, 'npu_ops.dropout')['keep_prob'] == 0.4
        assert output.shape.as_list() == [2, 8]
    assert runtime.dropout_fn('cpu') is None  # the network's tf.nn.dropout
    assert len(standin.calls('npu_ops.dropout')) == 1


# ---------------------------------------------------------------- loss scaling decisions

@pytest.mark.parametrize('device,precision_mode,mixed,expected', [
    ('npu', 'allow_mix_precision', 'auto', runtime.NPU_INIT_LOSS_SCALE),
    ('npu', 'allow_fp32_to_fp16', 'auto', runtime.NPU_INIT_LOSS_SCALE),
    ('npu', 'force_fp16', 'on', runtime.NPU_INIT_LOSS_SCALE),
    ('npu', 'allow_mix_precision', 'off', None),
    ('npu', 'force_fp32', 'auto', None),
    ('npu', 'must_keep_origin_dtype', 'auto', None),
    ('gpu', 'allow_mix_precision', 'auto', None),
    ('gpu', 'allow_mix_precision', 'on', runtime.GPU_INIT_LOSS_SCALE),
    ('cpu', 'allow_mix_precision', 'auto', None),
])
def test_loss_scaling_only_where_gradients_are_float16(device, precision_mode, mixed, expected):
    scaling = runtime.loss_scaling(device, precision_mode, mixed)
    if expected is None:
        assert scaling is None
    else:
        assert scaling == runtime.LossScaling(None, expected, 1000, 2, 0.5)


def test_contradictory_mixed_precision_is_refused():
    with pytest.raises(ValueError, match='contradicts --precision_mode force_fp32'):
        runtime.loss_scaling('npu', 'force_fp32', 'on')


# ---------------------------------------------------------------- optimizer wrapping

def test_the_overflow_recorder_answers_for_the_optimizer_it_wraps():
    """Slots and variables are the wrapped optimizer's: the wrapper keeps none of its own."""
    with tf.Graph().as_default():
        weight = tf.get_variable('w', initializer=1.0)
        optimizer = finite_flag.FiniteGradientsRecorder(tf.train.MomentumOptimizer(0.1, 0.9))
        optimizer.minimize(weight * weight)
        assert optimizer.get_slot_names() == ['momentum']
        assert optimizer.get_slot(weight, 'momentum').op.name == 'w/Momentum'
        assert [v.op.name for v in optimizer.variables()] == ['w/Momentum']

def toy_loss():
    weight = tf.get_variable('weight', initializer=1.0)
    factor = tf.placeholder_with_default(1.0, [], name='factor')
    return weight, factor, weight * weight * factor


def test_distributed_wrapper_order_and_manager(standin):
    with tf.Graph().as_default():
        weight, _, loss = toy_loss()
        scaling = runtime.loss_scaling('npu', 'allow_mix_precision')
        optimizer = runtime.wrap_optimizer(tf.train.MomentumOptimizer(0.1, 0.9), 'npu', scaling,
                                           distributed=True)
        names = [c['api'] for c in standin.CALLS]
        assert names == ['NPUDistributedOptimizer', 'ExponentialUpdateLossScaleManager',
                         'NPULossScaleOptimizer']
        assert only(standin, 'NPUDistributedOptimizer')['inner'] == 'MomentumOptimizer'
        outer = only(standin, 'NPULossScaleOptimizer')
        assert outer == {'api': 'NPULossScaleOptimizer', 'inner': 'NPUDistributedOptimizer',
                         'manager': 'ExponentialUpdateLossScaleManager', 'is_distributed': True}
        manager = only(standin, 'ExponentialUpdateLossScaleManager')
        assert (manager['init_loss_scale'], manager['incr_every_n_steps'],
                manager['decr_every_n_nan_or_inf'], manager['decr_ratio']) == (2 ** 32, 1000, 2,
                                                                                0.5)
        assert manager['outside_control_dependencies']

        global_step = tf.train.get_or_create_global_step()
        train_op = optimizer.minimize(loss, global_step=global_step)
        overflow = finite_flag.overflow_indicator(scaling)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            assert sess.run([train_op, overflow])[1] == False  # noqa: E712 (numpy bool)
            assert sess.run(global_step) == 1 and sess.run(weight) < 1.0


def test_single_device_fixed_scale_and_no_distributed_optimizer(standin):
    with tf.Graph().as_default():
        scaling = runtime.loss_scaling('npu', 'allow_mix_precision', loss_scale=1024)
        runtime.wrap_optimizer(tf.train.MomentumOptimizer(0.1, 0.9), 'npu', scaling)
        assert [c['api'] for c in standin.CALLS] == ['FixedLossScaleManager',
                                                     'NPULossScaleOptimizer']
        assert only(standin, 'FixedLossScaleManager')['loss_scale'] == 1024.0
        assert only(standin, 'NPULossScaleOptimizer')['is_distributed'] is False


def test_float32_npu_training_gets_only_the_distributed_optimizer(standin):
    with tf.Graph().as_default():
        scaling = runtime.loss_scaling('npu', 'force_fp32')
        plain = tf.train.MomentumOptimizer(0.1, 0.9)
        assert runtime.wrap_optimizer(plain, 'npu', scaling) is plain
        runtime.wrap_optimizer(plain, 'npu', scaling, distributed=True)
        assert [c['api'] for c in standin.CALLS] == ['NPUDistributedOptimizer']
        assert finite_flag.overflow_indicator(scaling) is None


def test_gpu_mixed_precision_skips_and_flags_overflowed_steps():
    """TensorFlow's loss-scale optimizer (built on the CPU here): an inf gradient is skipped."""
    try:
        with tf.Graph().as_default():
            weight, factor, loss = toy_loss()
            scaling = runtime.loss_scaling('gpu', 'allow_mix_precision', 'on')
            with pytest.raises(RuntimeError, match='build the train op'):
                finite_flag.overflow_indicator(scaling)
            optimizer = runtime.wrap_optimizer(tf.train.GradientDescentOptimizer(0.1), 'gpu',
                                               scaling)
            global_step = tf.train.get_or_create_global_step()
            train_op = optimizer.minimize(loss, global_step=global_step)
            overflow = finite_flag.overflow_indicator(scaling)
            scale = [v for v in tf.global_variables() if 'loss_scale' in v.name]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                assert sess.run(scale[0]) == runtime.GPU_INIT_LOSS_SCALE
                history = []
                for value in (1.0, np.inf, 1.0):
                    flag = sess.run([train_op, overflow], {factor: value})[1]
                    history.append((bool(flag), int(sess.run(global_step)),
                                    float(sess.run(weight))))
        assert [h[:2] for h in history] == [(False, 1), (True, 1), (False, 2)]
        assert history[1][2] == history[0][2]  # the overflowed update was skipped
        assert scale[0].name.startswith('current_loss_scale')
    finally:
        tf.train.experimental.disable_mixed_precision_graph_rewrite()


def test_broadcast_covers_every_global_variable(standin):
    with tf.Graph().as_default():
        images = tf.random_uniform([2, IMAGE_SIZE[0], IMAGE_SIZE[1], 3])
        labels = tf.constant([0, 1])
        losses = objective.training_losses(images, labels, 18, 4,
                                            dropout_fn=runtime.dropout_fn('npu'))
        optimizer = runtime.wrap_optimizer(tf.train.MomentumOptimizer(0.1, 0.9), 'npu',
                                           runtime.loss_scaling('npu'), distributed=True)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            optimizer.minimize(losses.total, tf.train.get_or_create_global_step())
        op = runtime.broadcast_variables_op('npu')
        expected = {v.name for v in tf.global_variables()}
        calls = standin.calls('hccl_ops.broadcast')
        broadcast = [name for call in calls for name in call['tensors']]
        assert sorted(broadcast) == sorted(expected)  # each exactly once
        assert {call['root_rank'] for call in calls} == {0}
        for kind in ('moving_mean', 'moving_variance', 'Momentum', 'global_step', 'loss_scale',
                     'embedding_weights'):
            assert any(kind in name for name in broadcast), kind
        assert len(op.control_inputs) == len(expected)
        assert {i.type for i in op.control_inputs} == {'Assign'}
    with pytest.raises(ValueError, match='needs the NPU'):
        runtime.broadcast_variables_op('cpu')


# ---------------------------------------------------------------- HCCL environment

def rank_table(path, num_devices):
    devices = [{'device_id': str(i), 'device_ip': '192.168.10%d.101' % i, 'rank_id': str(i)}
               for i in range(num_devices)]
    with open(path, 'w') as out:
        json.dump({'server_count': '1', 'status': 'completed', 'version': '1.0',
                   'server_list': [{'server_id': '10.0.0.10', 'device': devices}]}, out)
    return path


def test_the_example_rank_table_is_valid_for_8_devices():
    env = {'RANK_SIZE': '8', 'RANK_ID': '7', 'ASCEND_DEVICE_ID': '7', 'JOB_ID': '10087',
           'RANK_TABLE_FILE': os.path.join(PROJECT_ROOT, 'test', 'rank_table_8p.json')}
    assert hccl_environment.hccl_ranks(env) == (7, 8)


def test_single_process_needs_no_hccl_variables():
    assert hccl_environment.hccl_ranks({}) == (0, 1)
    assert hccl_environment.hccl_ranks({'RANK_SIZE': '1', 'RANK_ID': '0'}) == (0, 1)


@pytest.mark.parametrize('change,message', [
    ({'RANK_TABLE_FILE': None}, 'RANK_SIZE=2 but RANK_TABLE_FILE is not set'),
    ({'RANK_TABLE_FILE': '/nonexistent/table.json'}, 'RANK_TABLE_FILE=/nonexistent/table.json: '
                                                     'no such file'),
    ({'RANK_ID': None}, 'RANK_SIZE=2 but RANK_ID is not set'),
    ({'RANK_ID': '2'}, 'RANK_ID=2 is out of range for RANK_SIZE=2: expected 0..1'),
    ({'RANK_ID': 'one'}, "RANK_ID='one': expected an integer"),
    ({'JOB_ID': None}, 'RANK_SIZE=2 but JOB_ID is not set'),
    ({'ASCEND_DEVICE_ID': None}, 'neither ASCEND_DEVICE_ID nor DEVICE_ID is set'),
    ({'ASCEND_DEVICE_ID': None, 'DEVICE_ID': '0'},
     'puts RANK_ID=1 on device_id 1, but DEVICE_ID=0'),
    ({'RANK_SIZE': '4'}, 'lists 2 devices but RANK_SIZE=4'),
    ({'RANK_SIZE': '0'}, 'RANK_SIZE=0: expected a positive integer'),
])
def test_incomplete_hccl_environment_is_named(tmp_path, change, message):
    env = {'RANK_SIZE': '2', 'RANK_ID': '1', 'ASCEND_DEVICE_ID': '1', 'JOB_ID': '10087',
           'RANK_TABLE_FILE': rank_table(str(tmp_path / 'table.json'), 2)}
    for key, value in change.items():
        if value is None:
            del env[key]
        else:
            env[key] = value
    with pytest.raises(ValueError) as error:
        hccl_environment.hccl_ranks(env)
    assert message in str(error.value) and '\n' not in str(error.value)


def test_device_id_and_malformed_rank_table(tmp_path):
    table = rank_table(str(tmp_path / 'table.json'), 2)
    env = {'RANK_SIZE': '2', 'RANK_ID': '1', 'DEVICE_ID': '1', 'JOB_ID': '1',
           'RANK_TABLE_FILE': table}
    assert hccl_environment.hccl_ranks(env) == (1, 2)
    with open(table, 'w') as out:
        out.write('{"group_list": []}')
    with pytest.raises(ValueError, match="is not a rank table .*format 1.0"):
        hccl_environment.hccl_ranks(env)


# ---------------------------------------------------------------- train_nets.py refusals

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """8 identities x 6 images of 32x32, a 20-pair lfw.bin, TFRecords in raw/tfrecords."""
    raw = os.path.join(str(tmp_path_factory.mktemp('npu_tiny')), 'data')
    make_dataset(raw, num_identities=8, images_per_identity=6, num_val_identities=4,
                 num_val_pairs=20, image_size=IMAGE_SIZE, seed=3)
    mx2tfrecords.convert(os.path.join(raw, 'train.rec'), os.path.join(raw, 'train.idx'),
                         os.path.join(raw, 'tfrecords'), num_shards=2, progress=False)
    return raw


def flags(data, out, *extra):
    return ['--tfrecords_file_path', os.path.join(data, 'tfrecords'), '--eval_db_path', data,
            '--eval_datasets', 'lfw', '--image_size', '%d,%d' % IMAGE_SIZE,
            '--net_depth', '18', '--batch_size', '4', '--eval_batch_size', '8',
            '--buffer_size', '16', '--ckpt_path', os.path.join(out, 'ckpt'),
            '--summary_path', os.path.join(out, 'summary'),
            '--log_file_path', os.path.join(out, 'logs'), '--lr_values', '0.01,0.001',
            '--lr_steps', '1000', '--show_info_interval', '1', '--device', 'npu',
            '--seed', '1'] + list(extra)


def refusal(capsys, argv):
    code = train_nets.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_incomplete_hccl_environment_stops_train_nets(standin, tiny_data, tmp_path, capsys,
                                                      monkeypatch):
    for name in ('RANK_TABLE_FILE', 'RANK_ID', 'ASCEND_DEVICE_ID', 'DEVICE_ID', 'JOB_ID'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('RANK_SIZE', '8')
    err = refusal(capsys, flags(tiny_data, str(tmp_path)))
    assert 'RANK_SIZE=8 but RANK_ID is not set' in err
    assert not os.path.exists(str(tmp_path / 'ckpt'))


@pytest.mark.parametrize('extra,expected', [
    (['--iterations_per_loop', '10', '--device', 'cpu'],
     '--iterations_per_loop 10: loop sinking runs on the NPU; on the cpu use 1'),
    (['--iterations_per_loop', '3'], '--validate_interval 2000, --ckpt_interval 10000 are '
                                     'not a multiple of --iterations_per_loop 3'),
    (['--iterations_per_loop', '4', '--max_steps', '6'],
     '--max_steps 6 is not a multiple of --iterations_per_loop 4'),
])
def test_impossible_device_flags_are_refused(tiny_data, tmp_path, capsys, extra, expected):
    assert expected in refusal(capsys, flags(tiny_data, str(tmp_path), *extra))


@pytest.mark.parametrize('extra,expected', [
    (['--decr_ratio', '2'], "argument --decr_ratio: expected a number in (0, 1), got '2'"),
    (['--max_consecutive_overflows', '0'],
     "argument --max_consecutive_overflows: expected a positive integer, got '0'"),
])
def test_impossible_loss_scaling_flags_are_refused_by_the_parser(tiny_data, tmp_path, capsys,
                                                                  extra, expected):
    with pytest.raises(SystemExit) as stop:
        train_nets.main(flags(tiny_data, str(tmp_path), *extra))
    assert stop.value.code == 2
    assert capsys.readouterr().err == 'train_nets.py: error: %s\n' % expected


def test_help_documents_the_device_flags():
    help_text = train_nets.get_parser().format_help()
    for flag in ('--device', '--precision_mode', '--iterations_per_loop',
                 '--graph_memory_max_size', '--variable_memory_max_size', '--loss_scale',
                 '--init_loss_scale', '--incr_every_n_steps', '--decr_every_n_nan_or_inf',
                 '--decr_ratio', '--mixed_precision', '--max_consecutive_overflows'):
        assert flag in help_text, flag
    args = train_nets.get_parser().parse_args(['--loss_scale', '512'])
    assert args.loss_scale == 512.0 and args.mixed_precision == 'auto'
    assert train_nets.get_parser().parse_args([]).loss_scale == 'dynamic'


# ---------------------------------------------------------------- end to end with --device npu

def run_npu_training(argv, record, **env):
    environ = npu_environ(PYTHONPATH=os.pathsep.join(
        [STANDIN_PATH, PROJECT_ROOT, os.environ.get('PYTHONPATH', '')]),
        NPU_STANDIN_RECORD=record, **env)
    result = subprocess.run([sys.executable, 'train_nets.py'] + argv, cwd=PROJECT_ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    calls = []
    if os.path.isfile(record):
        with open(record) as recorded:
            calls = json.load(recorded)
    return result, calls


def apis(calls, api):
    return [call for call in calls if call['api'] == api]


@pytest.fixture(scope='module')
def npu_run(tiny_data, tmp_path_factory):
    """Rank 0 of 1, 4 steps; the stand-in reports overflow on the 2nd and 3rd update."""
    out = str(tmp_path_factory.mktemp('npu_run'))
    result, calls = run_npu_training(
        flags(tiny_data, out, '--max_steps', '4', '--validate_interval', '2',
              '--summary_interval', '1', '--ckpt_interval', '100'),
        os.path.join(out, 'record.json'), NPU_STANDIN_OVERFLOW_CALLS='2,3')
    return out, result, calls


def test_npu_training_runs_end_to_end(npu_run):
    out, result, calls = npu_run
    assert result.returncode == 0, result.stdout
    assert 'device npu' in result.stdout and '[lfw][4]Accuracy-Flip' in result.stdout
    latest = tf.train.latest_checkpoint(os.path.join(out, 'ckpt'))
    assert tf.train.load_variable(latest, 'global_step') == 4
    assert [c['api'] for c in calls if 'Optimizer' in c['api'] or 'Manager' in c['api']] == [
        'ExponentialUpdateLossScaleManager', 'NPULossScaleOptimizer']
    outer = apis(calls, 'NPULossScaleOptimizer')[0]
    assert outer['inner'] == 'MomentumOptimizer' and outer['is_distributed'] is False
    manager = apis(calls, 'ExponentialUpdateLossScaleManager')[0]
    assert manager['outside_control_dependencies'] is True
    assert manager['init_loss_scale'] == 2 ** 32 and manager['decr_ratio'] == 0.5
    assert [c['keep_prob'] for c in apis(calls, 'npu_ops.dropout')] == [0.4]
    assert not apis(calls, 'hccl_ops.broadcast')  # one process: nothing to broadcast
    # The loss-scale state is checkpointed with the model, so a resume keeps the scale.
    assert 'loss_scale' in dict(tf.train.list_variables(latest))


def test_overflowed_steps_are_skipped_counted_and_logged(npu_run):
    out, result, _ = npu_run
    assert result.returncode == 0, result.stdout
    log = result.stdout
    assert 'gradient overflow after step 1: update skipped (1 overflowed steps' in log
    assert 'gradient overflow after step 1: update skipped (2 overflowed steps' in log
    assert log.count('gradient overflow') == 2 and 'non-finite' not in log
    assert 'step 4, total loss' in log and ', 2 overflowed steps skipped' in log
    overflow_summaries = {}
    for path in glob.glob(os.path.join(out, 'summary', 'events.out.tfevents.*')):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == 'overflow_steps':
                    overflow_summaries[event.step] = value.simple_value
    assert overflow_summaries == {1: 0.0, 2: 2.0, 3: 2.0, 4: 2.0}


def test_consecutive_overflows_stop_training_without_a_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    result, _ = run_npu_training(
        flags(tiny_data, out, '--max_steps', '10', '--ckpt_interval', '1',
              '--max_consecutive_overflows', '3'),
        os.path.join(out, 'record.json'), NPU_STANDIN_OVERFLOW_CALLS='all')
    assert result.returncode == 1, result.stdout
    assert '3 consecutive gradient overflows' in result.stdout
    assert result.stdout.count('gradient overflow after step 0') == 3
    assert not glob.glob(os.path.join(out, 'ckpt', '*.index'))


# ---------------------------------------------------------------- the training graph on the NPU

def npu_training_graph(loss_type, device='npu'):
    """train_graph.build_graph at depth 18 for 10 classes, as on the NPU; returns its dict."""
    from training import setup, train_graph
    args = train_nets.get_parser().parse_args(['--net_depth', '18', '--device', device,
                                               '--loss_type', loss_type, '--image_size', '32,32',
                                               '--batch_size', '2'])
    plan = setup.Plan({'shard_paths': ['unused.tfrecord']}, 10, 1, 1, [], device, 0, 1,
                      runtime.loss_scaling(device, args.precision_mode), False, [], None, [1, 2, 3],
                      npu_options.make(), setup.graph_spec(args), None)
    return train_graph.build_graph(plan.graph, plan)


def kept_float32(graph):
    return {op.name for op in graph.get_operations()
            if '_keep_dtype' in op.node_def.attr and op.get_attr('_keep_dtype') == 1}


@pytest.mark.parametrize('loss_type,margin_op', [('arcface', 'Sqrt'), ('combine', 'Acos')])
def test_margin_softmax_and_normalisations_stay_float32_on_the_npu(standin, loss_type,
                                                                   margin_op):
    """Under allow_mix_precision CANN picks each op's precision; keep_dtype_scope pins these."""
    with tf.Graph().as_default() as graph:
        npu_training_graph(loss_type)
        kept = kept_float32(graph)
        types = {graph.get_operation_by_name(name).type for name in kept}
        assert {'SparseSoftmaxCrossEntropyWithLogits', 'Rsqrt', margin_op} <= types, types
        assert not any(name.startswith('resnet_v1_18/') for name in kept)  # the network: fp16
        cos_t = [op for op in graph.get_operations() if op.name.endswith('cos_t')]
        assert cos_t and not kept & {op.name for op in cos_t}  # the big matmul: fp16 too
    with tf.Graph().as_default() as graph:
        npu_training_graph(loss_type, device='cpu')
        assert not kept_float32(graph)


def test_validation_embeds_in_float32_on_the_npu(standin):
    """Validation's graph: every op of the network under keep_dtype_scope (the precision
    mode is process-wide on the NPU), its session an NPU session without loop sinking."""
    from training import validation_graph
    with tf.Graph().as_default():
        tensors = npu_training_graph('arcface')
        options = npu_options.make(iterations_per_loop=4)
        validation = validation_graph.ValidationGraph(18, 'standard', 'batch', IMAGE_SIZE, None,
                                                      4, 'npu', options)
        try:
            graph = validation.session.graph
            network = [op for op in graph.get_operations()
                       if op.type in ('Conv2D', 'MatMul', 'FusedBatchNormV3', 'Prelu', 'Relu')
                       or op.name.startswith('resnet_v1_18/') and op.type == 'Add']
            assert len(network) > 40
            assert not {op.name for op in network} - kept_float32(graph)
            parameters = npu_parameters(validation.session._config)
            assert parameters['iterations_per_loop'] == 1
            assert parameters['precision_mode'] == options.precision_mode.encode()
            # The training graph is untouched: its network still computes in float16.
            assert not any(name.startswith('resnet_v1_18/')
                           for name in kept_float32(tensors['train_op'].graph))
        finally:
            validation.close()


def test_the_fetched_step_is_read_after_the_update():
    """The step fetched with the train op is the one it completed (checkpoint names, resume)."""
    with tf.Graph().as_default():
        tensors = npu_training_graph('arcface', device='cpu')
        step = tensors['fetches']['step']
        assert tensors['train_op'] in step.op.control_inputs
        global_step = tf.train.get_global_step()
        assert step.op.inputs[0].op is global_step.op or step.op.type == 'ReadVariableOp'


def test_inf_nan_mode_counts_overflows_from_the_gradients(tiny_data, tmp_path):
    """Ascend 910B's INF/NaN mode builds no overflow_status_reduce_all: the count still holds."""
    out = str(tmp_path)
    result, _ = run_npu_training(
        flags(tiny_data, out, '--max_steps', '3', '--validate_interval', '3'),
        os.path.join(out, 'record.json'), NPU_STANDIN_OVERFLOW_CALLS='2',
        NPU_STANDIN_ADAPTER='inf-nan')
    assert result.returncode == 0, result.stdout
    assert result.stdout.count('gradient overflow after step 1: update skipped (1 overflowed') == 1
    assert 'step 3, total loss' in result.stdout and ', 1 overflowed steps skipped' in result.stdout


def test_adapters_before_r1_5_are_refused_in_one_line(tiny_data, tmp_path):
    out = str(tmp_path)
    result, _ = run_npu_training(flags(tiny_data, out, '--max_steps', '2'),
                                 os.path.join(out, 'record.json'),
                                 NPU_STANDIN_ADAPTER='before-r1.5')
    assert result.returncode == 2, result.stdout
    # One line of ours (TensorFlow may log its start-up notices before it).
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith('train_nets.py: error: --device npu: the installed npu_bridge is '
                           'older than TF adapter r1.5.0 (CANN 5.0.x)'), result.stdout
    assert result.stdout.count('train_nets.py: error') == 1
    assert not os.path.exists(os.path.join(out, 'ckpt'))


def test_loop_sinking_runs_n_steps_per_sess_run(tiny_data, tmp_path):
    """--iterations_per_loop 2: util.set_iteration_per_loop's op, run twice for 4 steps;
    logs, validation and checkpoints after whole loops."""
    out = str(tmp_path)
    result, calls = run_npu_training(
        flags(tiny_data, out, '--max_steps', '4', '--iterations_per_loop', '2',
              '--validate_interval', '2', '--ckpt_interval', '2', '--summary_interval', '1'),
        os.path.join(out, 'record.json'))
    assert result.returncode == 0, result.stdout
    loops = apis(calls, 'util.set_iteration_per_loop')
    assert [c['iterations_per_loop'] for c in loops] == [2]
    assert len(apis(calls, 'IterationOp.run')) == 2
    assert re.findall(r'total_step (\d+),', result.stdout) == ['2', '4']
    assert re.findall(r'\[lfw\]\[(\d+)\]Accuracy-Flip', result.stdout) == ['2', '4']
    index = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, 'ckpt', '*.index')))
    assert index == ['InsightFace_iter_2.ckpt.index', 'InsightFace_iter_4.ckpt.index']
