"""bfloat16 training on the CPU: refused where unavailable, used where the CPU has it, and
the margin head, losses and variables kept float32 in the graph TensorFlow actually runs.

The tests that train or inspect the rewritten graph need a CPU with bfloat16 instructions
(avx512_bf16 or amx_bf16) and TensorFlow 2.9 or later; elsewhere they skip, saying why.
"""
import functools
import json
import os

import pytest
import tensorflow.compat.v1 as tf

from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from devices import onednn_bfloat16, runtime
from losses import objective
import train_nets

from test_train_nets import (assert_validation_logs_what_evaluation_reports, flags, refusal,
                             run_training)

REFUSAL = onednn_bfloat16.refusal()
needs_bfloat16 = pytest.mark.skipif(REFUSAL is not None, reason='no bfloat16 here: %s' % REFUSAL)


def test_on_is_refused_where_onednn_is_off(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    err = refusal(capsys, flags(tiny_data, str(tmp_path), '--mixed_precision', 'on'))
    expected = ('TensorFlow %s has no oneDNN bfloat16 rewrite' % tf.__version__ if REFUSAL
                and 'rewrite' in REFUSAL else 'TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN')
    assert err.startswith('train_nets.py: error: --mixed_precision on: on the CPU it trains '
                          'in bfloat16, but %s' % expected), err
    assert not os.path.exists(str(tmp_path / 'ckpt'))


def test_a_cpu_without_bfloat16_instructions_is_named(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n')
    reason = onednn_bfloat16.refusal(str(cpuinfo))
    if 'rewrite' not in (REFUSAL or ''):  # TensorFlow 1.15 has no rewrite: that comes first
        assert reason == ('this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16 in '
                          '%s)' % cpuinfo)
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n')
    assert onednn_bfloat16.refusal(str(cpuinfo)) == (REFUSAL if REFUSAL and 'rewrite' in
                                                      REFUSAL else None)


def test_auto_and_off_never_refuse():
    assert runtime.cpu_bfloat16('cpu', 'auto') is (REFUSAL is None)
    assert runtime.cpu_bfloat16('cpu', 'off') is False
    assert runtime.cpu_bfloat16('npu', 'on') is False  # the NPU's mixed precision is float16


def bfloat16_ops(loss_type, float32_scope=True):
    """{node name: op} of the bfloat16 nodes TensorFlow ran for one training step."""
    with tf.Graph().as_default():
        images = tf.random_uniform([2, 112, 112, 3], -1.0, 1.0, seed=1)
        labels = tf.constant([3, 7])
        losses = objective.training_losses(
            images, labels, 18, 10, loss_type,
            float32_scope=functools.partial(runtime.float32_scope, 'cpu', float32_scope))
        step = tf.train.MomentumOptimizer(0.01, 0.9).minimize(losses.total)
        metadata = tf.RunMetadata()
        with tf.Session(config=runtime.session_config('cpu', bfloat16=True)) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(step, options=tf.RunOptions(output_partition_graphs=True),
                     run_metadata=metadata)
    return {node.name: node.op for graph in metadata.partition_graphs for node in graph.node
            if 'T' in node.attr and node.attr['T'].type == tf.bfloat16.as_datatype_enum}


@needs_bfloat16
@pytest.mark.parametrize('loss_type', ['arcface', 'combine'])
def test_the_network_computes_in_bfloat16_and_the_head_in_float32(loss_type):
    ops = bfloat16_ops(loss_type)
    convolutions = [name for name, op in ops.items() if 'Conv2D' in op]
    assert len(convolutions) > 40  # the backbone's convolutions, forward and backward
    # Besides the backbone and its gradients, only the cosine matmul (as on the NPU).
    outside = sorted(name for name in ops if not name.startswith((
        'resnet_v1_18/', 'gradients/resnet_v1_18/', 'gradients/AddN', 'arcface_loss/cos_t',
        'gradients/arcface_loss/cos_t_grad/', 'cos_t', 'gradients/cos_t_grad/')))
    assert not outside, outside


@needs_bfloat16
def test_without_the_float32_scope_the_rewrite_would_take_the_head():
    """The check above can fail: the rewrite alone converts the normalisation and margin."""
    converted = bfloat16_ops('arcface', float32_scope=False)
    assert any(name.startswith('l2_normalize') for name in converted)


@needs_bfloat16
def test_train_nets_trains_in_bfloat16_by_default_where_the_cpu_has_it(tiny_data, tmp_path):
    out = str(tmp_path)
    result = run_training(flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2'))
    assert result.returncode == 0, result.stdout
    assert 'mixed precision: bfloat16 on the CPU (oneDNN)' in result.stdout
    with open(os.path.join(out, 'logs', 'run_config.json')) as record:
        assert json.load(record)['cpu_bfloat16'] is True
    off = run_training(flags(tiny_data, str(tmp_path / 'off'), '--max_steps', '1',
                             '--validate_interval', '100', '--mixed_precision', 'off'))
    assert off.returncode == 0, off.stdout
    assert 'mixed precision' not in off.stdout
    assert train_nets.get_parser().parse_args([]).mixed_precision == 'auto'


@needs_bfloat16
def test_validation_in_a_bfloat16_run_logs_what_eval_ckpt_file_reports(tiny_data, tmp_path):
    """The training computes in bfloat16; validation, like eval_ckpt_file.py, in float32."""
    log = assert_validation_logs_what_evaluation_reports(tiny_data, str(tmp_path),
                                                        '--mixed_precision', 'on')
    assert 'mixed precision: bfloat16 on the CPU (oneDNN)' in log


def test_inference_sessions_keep_float32_after_the_gpu_rewrite_is_enabled():
    """TensorFlow gives every session made after enable_mixed_precision_graph_rewrite the
    float16 rewrite unless its config turns it off, as inference_session_config does."""
    try:
        with tf.Graph().as_default():
            variable = tf.Variable(1.0)
            runtime.wrap_optimizer(tf.train.GradientDescentOptimizer(0.1), 'gpu',
                                   runtime.loss_scaling('gpu', mixed_precision='on'))
            rewrite = 'auto_mixed_precision'
            with tf.Session(config=runtime.session_config('cpu')) as training:
                assert getattr(training._config.graph_options.rewrite_options, rewrite) == \
                    RewriterConfig.ON
            with tf.Session(config=runtime.inference_session_config('cpu')) as validation:
                assert getattr(validation._config.graph_options.rewrite_options, rewrite) == \
                    RewriterConfig.OFF
                assert validation.run(variable.initial_value) == 1.0
    finally:
        tf.train.experimental.disable_mixed_precision_graph_rewrite()
