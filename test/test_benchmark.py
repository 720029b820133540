"""The benchmark suite's own arithmetic: FLOP counting and the report table."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import L_Resnet_E_IR

BENCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'benchmark')
sys.path.insert(0, BENCH_DIR)

import bench  # noqa: E402  (test/benchmark is not a package)
import bench_norms  # noqa: E402
import bench_peer  # noqa: E402
import bench_scale  # noqa: E402
import bench_step_options  # noqa: E402
import flops  # noqa: E402


def analytic_forward_flops(depth, batch, size):
    """Conv + dense FLOPs of L_Resnet_E_IR written out by hand from the paper's layout."""
    total = 2 * size * size * L_Resnet_E_IR.STEM_CHANNELS * 3 * 3 * 3
    channels = L_Resnet_E_IR.STEM_CHANNELS
    for units, width in zip(L_Resnet_E_IR.UNITS_PER_BLOCK[depth], L_Resnet_E_IR.BLOCK_CHANNELS):
        for unit in range(units):
            out_size = size // 2 if unit == 0 else size
            total += 2 * size * size * width * 9 * channels       # conv1, stride 1
            total += 2 * out_size * out_size * width * 9 * width  # conv2, stride 1 or 2
            if channels != width:
                total += 2 * out_size * out_size * width * channels  # 1x1 shortcut
            channels, size = width, out_size
    total += 2 * size * size * channels * L_Resnet_E_IR.EMBEDDING_SIZE
    return batch * total


@pytest.mark.parametrize('depth,size', [(18, 112), (50, 32)])
def test_forward_flops_match_the_hand_count(depth, size):
    with tf.Graph().as_default() as graph:
        images = tf.zeros([2, size, size, 3])
        L_Resnet_E_IR.get_resnet(images, depth, is_training=True)
        L_Resnet_E_IR.get_resnet(images, depth, is_training=False, reuse=True)
        counted = flops.forward_flops(graph, 'resnet_v1_%d/' % depth)
    assert counted == analytic_forward_flops(depth, 2, size)


def test_matmul_flops_honour_transpose():
    with tf.Graph().as_default():
        a = tf.zeros([7, 5])
        b = tf.zeros([7, 3])
        product = tf.matmul(a, b, transpose_a=True)  # [5, 3], inner dimension 7
        assert flops.op_flops(product.op) == 2 * 5 * 3 * 7


def test_dynamic_batch_is_refused():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 8, 8, 3])
        out = tf.nn.conv2d(images, tf.zeros([3, 3, 3, 4]), [1, 1, 1, 1], 'SAME')
        with pytest.raises(ValueError, match='static shape'):
            flops.op_flops(out.op)


def _run(tf_version, d50_seconds):
    machine = {'tensorflow': tf_version, 'python': '3.x', 'cpu': 'cpu', 'logical_cpus': 2,
               'usable_cpus': 2, 'memory_gib': 1.0, 'os': 'Linux',
               'TF_ENABLE_ONEDNN_OPTS': 'unset'}
    return {'mode': 'quick', 'results': {
        'data': {'machine': machine, 'matmul': {'gflops': 200.0}},
        'train_d50': {'achieved_gflops': 120.0, 'images_per_s': 32 / d50_seconds}}}


def test_report_puts_runs_side_by_side_and_marks_missing_figures(tmp_path):
    paths = []
    for name, run in (('a.json', _run('2.21.0', 4.0)), ('b.json', _run('1.15.5', 8.0))):
        path = tmp_path / name
        path.write_text(json.dumps(run))
        paths.append(str(path))
    output = subprocess.check_output(
        [sys.executable, os.path.join(BENCH_DIR, 'bench.py'), '--report'] + paths,
        universal_newlines=True)
    lines = output.splitlines()
    assert 'TF 2.21.0' in lines[0] and 'TF 1.15.5' in lines[0]
    row = [line for line in lines if line.startswith('| Train d50 b32 (images/s')][0]
    assert row.split('|')[2].strip() == '8.00' and row.split('|')[3].strip() == '4.00'
    fraction = [line for line in lines if 'd50 b32 (fraction' in line][0]
    assert fraction.split('|')[2].strip() == '60%'
    missing = [line for line in lines if line.startswith('| Inference d18')][0]
    assert missing.split('|')[2].strip() == '-'


def test_bfloat16_rows_use_the_bfloat16_peak_and_a_skipped_section_prints_a_dash(tmp_path):
    with_bf16 = _run('2.21.0', 4.0)
    with_bf16['results']['data']['matmul_bfloat16'] = {'gflops': 400.0}
    with_bf16['results']['train_d50_bfloat16'] = {'achieved_gflops': 100.0,
                                                  'images_per_s': 6.5, 'peak_rss_mb': 4000.0}
    without = _run('1.15.5', 8.0)
    without['results']['data']['matmul_bfloat16'] = {'unavailable': 'no bfloat16 MatMul'}
    without['results']['train_d50_bfloat16'] = {'skipped': 'trains without bfloat16'}
    paths = []
    for name, run in (('a.json', with_bf16), ('b.json', without)):
        path = tmp_path / name
        path.write_text(json.dumps(run))
        paths.append(str(path))
    lines = subprocess.check_output(
        [sys.executable, os.path.join(BENCH_DIR, 'bench.py'), '--report'] + paths,
        universal_newlines=True).splitlines()

    def cells(start):
        row = [line for line in lines if line.startswith(start)][0]
        return [cell.strip() for cell in row.split('|')[2:4]]
    assert cells('| Matmul peak, bfloat16') == ['400', '-']
    assert cells('| Train d50 b32 bfloat16 (images/s') == ['6.50', '-']
    assert cells('| Train d50 b32 bfloat16 (fraction') == ['25%', '-']


def test_every_mode_runs_each_section_once():
    for mode, runs in bench.MODES.items():
        labels = [label for label, _, _ in runs]
        assert len(labels) == len(set(labels)), mode
        assert {'data', 'train_d50', 'train_d18', 'eval_memory'} <= set(labels), mode


def test_peer_report_divides_the_ports_rate_by_pytorchs_per_precision():
    best = {name: {'framework': name.split('_')[0], 'images_per_s': rate,
                   'rounds_images_per_s': [rate, rate - 1.0]}
            for name, rate in (('tf_float32', 5.0), ('torch_float32', 4.0),
                               ('tf_bfloat16', 9.0))}
    lines = bench_peer.report(best, None)
    assert [line for line in lines if 'float32 |' in line and 'port / PyTorch' in line] == [
        '| port / PyTorch, float32 | | **1.25x** | |']
    # no PyTorch bfloat16 figure: no bfloat16 ratio rather than a wrong one
    assert not [line for line in lines if 'port / PyTorch, bfloat16' in line]
    assert '| tf_bfloat16 | tf | 9.00 | 9.00, 8.00 |' in lines


def test_profile_sums_node_time_by_op_type_longest_first():
    metadata = tf.RunMetadata()
    for name, label, micros in (('a/conv', 'a/conv = _MklNativeConv2D(x, w)', 300),
                                ('b/conv', 'b/conv = _MklNativeConv2D(y, w)', 200),
                                ('c/mul', 'c/mul = Mul(p, q)', 400),
                                ('_SOURCE', '', 1)):
        node = metadata.step_stats.dev_stats.add().node_stats.add()
        node.node_name, node.timeline_label, node.all_end_rel_micros = name, label, micros
    assert bench_step_options.top_op_types(metadata, 2) == [('_MklNativeConv2D', 0.5),
                                                            ('Mul', 0.4)]


def test_bench_ijb_scaled_release_repeats_the_release_with_its_own_pairs(tmp_path):
    """bench_ijb's copies: k times the images, templates and pairs, each copy scoring its
    own pairs, so the same embeddings per copy give the same TAR@FAR as the original."""
    import bench_ijb
    from evaluation import ijb_meta, ijb_protocol
    from test_eval_ijb import write_release
    source = write_release(str(tmp_path / 'source'))
    original = source['meta']
    bench_ijb.scaled_release(source['root'], 'IJBC', 3, str(tmp_path / 'x3'))
    scaled = ijb_meta.read_meta(str(tmp_path / 'x3'), 'IJBC')
    n, pairs = len(original.image_names), original.labels.size
    assert len(scaled.image_names) == 3 * n and scaled.labels.size == 3 * pairs
    assert scaled.image_names[n] == '1_' + original.image_names[0]
    assert np.unique(scaled.templates).size == 3 * np.unique(original.templates).size
    assert np.array_equal(scaled.labels, np.tile(original.labels, 3))
    rng = np.random.RandomState(0)
    embeddings = rng.standard_normal((n, 16)).astype(np.float32)
    flipped = rng.standard_normal((n, 16)).astype(np.float32)
    alone = ijb_protocol.verify(original, embeddings, flipped)
    copied = ijb_protocol.verify(scaled, np.tile(embeddings, (3, 1)), np.tile(flipped, (3, 1)))
    assert np.array_equal(copied.scores, np.tile(alone.scores, 3))
    assert np.allclose(copied.tars, alone.tars)


def test_bench_norms_reads_accuracy_and_speed_from_the_training_log():
    """Final and best on the validation set named (another set ignored; the earliest step
    of a tie), and the median speed without the lines whose interval held a validation."""
    line = ('12:00:00 epoch 0, total_step %d, total loss is 1.00 , inference loss is 1.00, '
            'weight deacy loss is 0.00, training accuracy is 0.5, time %.3f samples/sec, '
            'lr 0.1, 1s elapsed, 1s left')
    log = '\n'.join([line % (10, 12.0), line % (20, 13.0),
                      '12:00:01 [orl_val][20]Accuracy-Flip: 0.80000+-0.01',
                      '12:00:01 [other][20]Accuracy-Flip: 0.99000+-0.01',
                      line % (30, 2.0), line % (40, 11.0),
                      '12:00:02 [orl_val][40]Accuracy-Flip: 0.90000+-0.01',
                      line % (50, 1.0), line % (60, 14.0),
                      '12:00:03 [orl_val][60]Accuracy-Flip: 0.90000+-0.01'])
    record = bench_norms.summarize(log, 'orl_val', 10)
    assert record['final'] == 0.9 and record['final_step'] == 60
    assert record['best'] == 0.9 and record['best_step'] == 40
    assert record['images_per_s'] == 12.5  # 12, 13, 11, 14: not 2 and 1 (after 20, 40)
    assert record['curve'] == [(20, 0.8), (40, 0.9), (60, 0.9)]


def test_bench_scale_takes_the_median_speed_after_the_warm_up_steps():
    line = ('12:00:00 epoch 0, total_step %d, total loss is 1.00 , inference loss is 1.00, '
            'weight deacy loss is 0.00, training accuracy is 0.5, time %.3f samples/sec, '
            'lr 0.1, 1s elapsed, 1s left')
    log = '\n'.join(line % (step, rate) for step, rate in
                    enumerate([0.5, 1.0, 9.0, 6.0, 7.0, 5.0], start=1))
    assert bench_scale.images_per_s(log, 2) == 7.0  # of 9, 6, 7, 5 (0.5 and 1 left out)
    assert bench_scale.images_per_s(log, 6) is None
