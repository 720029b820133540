"""Partial FC's arithmetic (losses/partial_fc.py): blocks, sampling, initial centres, and
the sharded margin softmax against the unsharded head it must equal."""
import logging
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from devices import parallel
from losses import face_losses, objective, partial_fc
from training import checkpoint_utils

import eval_ckpt_file
import train_nets
import train_nets_mgpu

from test_parallel import (DEPTH, LEARNING_RATE, NUM_CLASSES, STEPS, TWO_CPUS, batches,
                           initial_feed, run_mgpu, update_error, variable_groups)
from test_parallel import flags as mgpu_flags

EMBEDDING = 8  # small embeddings keep these graphs cheap; nothing depends on 512


def test_blocks_are_insightfaces_split():
    # insightface PartialFC_V2: num_local = C // N + (rank < C % N), class_start alike.
    assert [partial_fc.class_block(10, r, 4) for r in range(4)] == [(0, 3), (3, 3), (6, 2),
                                                                    (8, 2)]
    for num_classes, world in ((93431, 8), (7, 7), (100, 3), (5, 1)):
        blocks = [partial_fc.class_block(num_classes, r, world) for r in range(world)]
        assert blocks[0][0] == 0 and sum(size for _, size in blocks) == num_classes
        assert all(a + n == b for (a, n), (b, _) in zip(blocks, blocks[1:]))
        assert max(n for _, n in blocks) - min(n for _, n in blocks) <= 1


def test_sample_size_is_the_ceiling_and_small_samples_are_refused():
    assert partial_fc.sample_size(0.1, 1000) == 100
    assert partial_fc.sample_size(0.1, 1001) == 101
    assert partial_fc.sample_size(0.3, 10) == 3  # 0.3 * 10 is 3.0000000000000004
    assert partial_fc.sample_size(1.0, 7) == 7
    for rate in (0.0, -0.5, 1.5):
        assert partial_fc.sampling_problem(rate, 1000, 2, 8) == 'expected a rate in (0, 1]'
    assert partial_fc.sampling_problem(1.0, 10, 4, 512) is None  # no sampling
    assert partial_fc.sampling_problem(0.1, 1001, 2, 50) is None  # blocks 501, 500: 50 rows
    assert partial_fc.sampling_problem(0.1, 1001, 2, 64) == (
        'each step samples 50 of the 500 classes of the smallest block, fewer than the global '
        'batch of 64 (a block may hold that many positives); use a rate of at least 0.128')


def initial_centres(graph_seed, num_classes, blocks):
    with tf.Graph().as_default():
        tf.set_random_seed(graph_seed)
        values = [partial_fc.centre_initial_value(num_classes, start, size, EMBEDDING)
                  for start, size in (partial_fc.class_block(num_classes, r, blocks)
                                      for r in range(blocks))]
        with tf.Session() as sess:
            return np.concatenate(sess.run(values), axis=1)


def test_initial_centres_depend_on_the_seed_and_class_only():
    num_classes = 2 * partial_fc.INIT_CHUNK + 100  # three chunks
    whole = initial_centres(7, num_classes, 1)
    assert whole.shape == (EMBEDDING, num_classes)
    np.testing.assert_array_equal(initial_centres(7, num_classes, 3), whole)
    assert not np.allclose(initial_centres(8, num_classes, 1), whole)
    # Xavier normal of the whole head: truncated at 2 std, std sqrt(1.3 * 2 / (D + C)).
    stddev = np.sqrt(1.3 * 2.0 / (EMBEDDING + num_classes))
    assert np.abs(whole).max() <= 2 * stddev
    assert abs(whole.std() / (0.88 * stddev) - 1.0) < 0.03  # a 2-std truncation: 0.88 std


def unsharded(loss_type, embeddings, labels, centres, margin_args):
    """The head train_nets.py builds today: loss, accuracy, and their gradients."""
    variable = tf.Variable(centres)
    emb = tf.Variable(embeddings)
    scope, logits_fn = face_losses.HEADS[loss_type]
    norm_emb = tf.nn.l2_normalize(emb, axis=1)
    norm_centres = tf.nn.l2_normalize(variable, axis=0)
    cos_t = tf.matmul(norm_emb, norm_centres)
    logits = logits_fn(cos_t, labels, **margin_args)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(cos_t, axis=1, output_type=tf.int32),
                                               labels), tf.float32))
    grads = tf.gradients(loss, [emb, variable])
    return loss, accuracy, grads


def sharded(loss_type, embeddings, labels, centres, margin_args, num_blocks, sample_rate=1.0):
    emb = tf.Variable(embeddings)
    num_classes = centres.shape[1]
    blocks, statistics = [], []
    for rank in range(num_blocks):
        start, size = partial_fc.class_block(num_classes, rank, num_blocks)
        blocks.append(tf.Variable(centres[:, start:start + size]))
        statistics.append(partial_fc.block_statistics(emb, labels, blocks[-1], start, loss_type,
                                                      margin_args, sample_rate, seed=rank))
    loss, accuracy = partial_fc.combine(statistics)
    grads = tf.gradients(loss, [emb] + blocks)
    return loss, accuracy, [grads[0], tf.concat([tf.convert_to_tensor(g) for g in grads[1:]],
                                                axis=1)], statistics


def head_inputs(num_classes=10, batch=6, seed=0):
    rng = np.random.RandomState(seed)
    embeddings = rng.normal(size=(batch, EMBEDDING)).astype(np.float32)
    centres = rng.normal(size=(EMBEDDING, num_classes)).astype(np.float32)
    labels = np.array([3, 3, 9, 0, 5, 7][:batch], np.int32)
    # Half the samples made easy, so the accuracy is neither 0 nor 1.
    embeddings[:3] += 3.0 * centres[:, labels[:3]].T
    return embeddings, labels, centres


MARGINS = {'arcface': {'s': 64.0, 'm': 0.5}, 'cosineface': {'s': 30.0, 'm': 0.4},
           'combine': {'s': 64.0, 'm1': 1.0, 'm2': 0.3, 'm3': 0.2}}


@pytest.mark.parametrize('loss_type', face_losses.LOSS_TYPES)
@pytest.mark.parametrize('num_blocks', [1, 3])
def test_sharded_head_equals_the_unsharded_one(loss_type, num_blocks):
    """Loss, accuracy and gradients (embeddings and every centre) to float tolerance."""
    embeddings, labels, centres = head_inputs()
    with tf.Graph().as_default():
        expected = unsharded(loss_type, embeddings, labels, centres, MARGINS[loss_type])
        actual = sharded(loss_type, embeddings, labels, centres, MARGINS[loss_type],
                         num_blocks)[:3]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            expected, actual = sess.run([expected, actual])
    assert 0.0 < expected[1] < 1.0
    assert actual[1] == expected[1]
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5)
    for got, want in zip(actual[2], expected[2]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_sampled_rows_hold_every_positive_and_only_they_get_gradients():
    embeddings, labels, centres = head_inputs(num_classes=40)
    labels = np.array([3, 3, 17, 25, 39, 0], np.int32)
    with tf.Graph().as_default():
        loss, _, grads, statistics = sharded('arcface', embeddings, labels, centres,
                                             MARGINS['arcface'], 1, sample_rate=0.25)
        rows = statistics[0].rows
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            draws = [sess.run([rows, loss, grads[1]]) for _ in range(3)]
    for chosen, value, centre_grad in draws:
        assert len(chosen) == 10 and list(chosen) == sorted(set(chosen))
        assert set(labels) <= set(chosen)
        touched = np.flatnonzero(np.abs(centre_grad).sum(axis=0))
        assert set(touched) == set(chosen)
        # The loss is the unsharded head's over the chosen classes only.
        with tf.Graph().as_default():
            local = np.searchsorted(chosen, labels).astype(np.int32)
            reference = unsharded('arcface', embeddings, local, centres[:, chosen],
                                  MARGINS['arcface'])[0]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                np.testing.assert_allclose(value, sess.run(reference), rtol=1e-5)
    assert len({tuple(chosen) for chosen, _, _ in draws}) > 1  # new negatives each step


# ---------------------------------------------------------------- training steps

HEAD = re.compile(r'^arcface_loss/embedding_weights(?:_(\d+)_\d+)?(/Momentum)?$')


def merged_head(values, slot=False):
    """The class centres (or their Momentum) of every block, side by side in class order."""
    blocks = []
    for name, value in values.items():
        match = HEAD.match(name)
        if match and bool(match.group(2)) == slot:
            blocks.append((int(match.group(1) or 0), value))
    return np.concatenate([value for _, value in sorted(blocks, key=lambda b: b[0])], axis=1)


def train(images, labels, num_classes, devices=None, backbone=None, sharded=True,
          sample_rate=1.0, steps=STEPS, weight_decay=5e-3):
    """Trains `steps` Momentum steps on constant data, the head's centres from --seed 1.

    Returns ({name: value} before, after, [each step's losses]); `backbone` gives
    the backbone's initial values (the towers' graphs number their ops otherwise).
    """
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        global_step = tf.train.get_or_create_global_step()
        optimizer = tf.train.MomentumOptimizer(LEARNING_RATE, 0.9)
        inputs = tf.constant(images), tf.constant(labels)
        if sharded:
            losses, train_op, _ = parallel.build_sharded_train_op(
                inputs[0], inputs[1],
                lambda batch: objective.training_embedding(batch, DEPTH, keep_prob=1.0),
                lambda embeddings, batch_labels, block_devices: objective.partial_fc_losses(
                    embeddings, batch_labels, num_classes, weight_decay=weight_decay,
                    sample_rate=sample_rate, seed=1, block_devices=block_devices),
                optimizer, global_step, devices=devices)
        else:
            def loss_fn(batch_images, batch_labels):
                result = objective.training_losses(batch_images, batch_labels, DEPTH,
                                                   num_classes, weight_decay=weight_decay,
                                                   keep_prob=1.0, seed=1)
                return result.inference, result.weight_decay, result
            losses, train_op, _ = parallel.build_train_op(inputs[0], inputs[1], loss_fn,
                                                          optimizer, global_step, devices)
        variables = tf.global_variables()
        feed = initial_feed(variables)
        if backbone is not None:
            feed.update({v.initial_value: backbone[v.op.name] for v in variables
                         if v.op.name in backbone and not HEAD.match(v.op.name)})
        names = [v.op.name for v in variables]
        config = parallel.configure_session(tf.ConfigProto(), devices or [])
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer(), feed)
            start = dict(zip(names, sess.run(variables)))
            history = []
            for _ in range(steps):
                history.append(sess.run(losses._asdict()))
                sess.run(train_op)
            end = dict(zip(names, sess.run(variables)))
    return start, end, history


@pytest.fixture(scope='module')
def layouts():
    """Each layout trained with the original's head and with a sharded one."""
    images, labels = batches()
    single = train(images, labels, NUM_CLASSES, sharded=False)
    backbone = single[0]
    return {
        'one block': (single, train(images, labels, NUM_CLASSES, backbone=backbone)),
        'two towers': (train(images, labels, NUM_CLASSES, TWO_CPUS, backbone=backbone,
                             sharded=False),
                       train(images, labels, NUM_CLASSES, TWO_CPUS, backbone=backbone))}


@pytest.mark.parametrize('layout', ['one block', 'two towers'])
def test_a_sharded_head_trains_the_data_parallel_model(layouts, layout):
    """--seed fixes each class's initial centre whatever the layout; then losses, accuracy
    and weights follow the data-parallel head's on the same devices, step by step."""
    reference, (start, end, history) = layouts[layout]
    np.testing.assert_array_equal(merged_head(start), merged_head(reference[0]))
    np.testing.assert_array_equal(merged_head(start),
                                  merged_head(layouts['one block'][0][0]))
    assert (layout == 'two towers') == ('arcface_loss/embedding_weights_0_2' in start)
    for step, (got, want) in enumerate(zip(history, reference[2])):
        for name in ('total', 'inference', 'weight_decay', 'accuracy'):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4,
                                       err_msg='%s at step %d' % (name, step))
    assert len({round(float(h['inference']), 4) for h in history}) == STEPS  # it trains
    trained, moving = variable_groups({n: v for n, v in reference[1].items()
                                       if not HEAD.match(n)})
    want, got = {'values': reference[1], 'bessel': {}}, {'values': end, 'bessel': {}}
    assert update_error(want, got, reference[0], trained) < 1e-3
    assert update_error(want, got, reference[0], moving) < 1e-3
    for slot in (False, True):
        update = merged_head(reference[1], slot) - (0.0 if slot else merged_head(start))
        moved = merged_head(end, slot) - (0.0 if slot else merged_head(start))
        assert np.linalg.norm(moved - update) / np.linalg.norm(update) < 1e-3, slot


def test_rows_that_sat_out_are_decayed_as_insightfaces():
    """--sample_rate 0.25 on two towers, 64 classes, batch 8: per block 8 of 32 rows take
    part; the others' only gradient is the weight decay, and Momentum applies it as
    insightface's SGD does (every row, every step)."""
    images, labels = batches()
    labels = np.array([0, 5, 33, 40, 63, 5, 31, 32], np.int64)
    start, end, _ = train(images, labels, 64, TWO_CPUS, sample_rate=0.25, steps=1,
                          weight_decay=5e-3)
    before, after = merged_head(start), merged_head(end)
    decayed = before - np.float32(LEARNING_RATE) * (np.float32(5e-3) * before)
    rule = np.all(np.isclose(after, decayed, rtol=1e-6, atol=0), axis=0)
    for first in (0, 32):
        took_part = set(np.flatnonzero(~rule[first:first + 32]) + first)
        positives = {c for c in labels if first <= c < first + 32}
        assert positives <= took_part and len(took_part) <= 8, (first, took_part)
    assert rule.sum() >= 64 - 16
    np.testing.assert_allclose(merged_head(end, slot=True)[:, rule],
                               np.float32(5e-3) * before[:, rule], rtol=1e-6)


def test_a_layout_is_whole_when_its_blocks_cover_every_class_once():
    assert partial_fc.layout_problem(partial_fc.layout(10, 3), 10) is None
    assert partial_fc.layout_problem([(0, 10)], 10, whole_name=True) is None
    assert partial_fc.layout_problem([(0, 4)], 4) == (
        'one block of a head written in several: the others are missing')
    assert partial_fc.layout_problem([(0, 4), (5, 5)], 10) == (
        'its blocks leave classes 4-4 out or hold them twice')
    assert partial_fc.layout_problem([(0, 6), (4, 6)], 10) == (
        'its blocks leave classes 4-5 out or hold them twice')
    assert partial_fc.layout_problem([(0, 4), (4, 4)], 10) == 'its blocks hold 8 classes, not 10'
    # Block [3, 7) of a head stored as (0-4, 5-9): columns 3-4 of the first, 0-1 of the second.
    assert partial_fc.reshard_pieces([(0, 5), (5, 5)], 3, 4) == [((0, 5), 3, 5), ((5, 5), 0, 2)]


def write_head(path, blocks, values, slot_values):
    """A checkpoint holding only the arcface head of `values` [D, C] stored as `blocks`."""
    with tf.Graph().as_default():
        saved = []
        for start, size in blocks:
            name = partial_fc.block_name('arcface', values.shape[1], start, size)
            saved.append(tf.Variable(values[:, start:start + size], name=name))
            saved.append(tf.Variable(slot_values[:, start:start + size], name=name + '/Momentum'))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return tf.train.Saver(saved).save(sess, path)


def restore_head(prefix, num_classes, blocks):
    """Builds the head as `blocks` (with Momentum slots) and restores it from `prefix`;
    returns (plan, the restored head and slot, merged into [D, C] each)."""
    with tf.Graph().as_default():
        variables = []
        for start, size in blocks:
            var = partial_fc.block_centres('arcface', num_classes, start, size, EMBEDDING)
            variables.append(var)
        loss = tf.add_n([tf.reduce_sum(var) for var in variables])
        tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
        plan = checkpoint_utils.plan_training_restore(prefix, tf.global_variables())
        with tf.Session() as sess:
            checkpoint_utils.apply_training_restore(sess, plan)
            graph = tf.get_default_graph()
            head = np.concatenate(sess.run(variables), axis=1)
            slots = np.concatenate(sess.run([graph.get_tensor_by_name(v.op.name + '/Momentum:0')
                                             for v in variables]), axis=1)
    return plan, head, slots


@pytest.mark.parametrize('stored,wanted', [(2, 3), (3, 2), (1, 3), (3, 1)])
def test_resume_re_shards_the_centres_and_their_momentum(tmp_path, stored, wanted):
    values = np.random.RandomState(0).standard_normal((EMBEDDING, 10)).astype(np.float32)
    slots = np.random.RandomState(1).standard_normal((EMBEDDING, 10)).astype(np.float32)
    prefix = write_head(str(tmp_path / 'ckpt'), partial_fc.layout(10, stored), values, slots)
    plan, head, slot = restore_head(prefix, 10, partial_fc.layout(10, wanted))
    np.testing.assert_array_equal(head, values)
    np.testing.assert_array_equal(slot, slots)
    resharded = dict(plan.resharded)
    assert len(resharded) == 2 * wanted  # every block and its slot
    if wanted == 3:  # block 4-6 is columns 4 of the first stored block and 0-2 of the next
        assert resharded['arcface_loss/embedding_weights_4_3'] == (
            ['arcface_loss/embedding_weights_0_5', 'arcface_loss/embedding_weights_5_5']
            if stored == 2 else ['arcface_loss/embedding_weights'])


# ---------------------------------------------------------------- the command line

def test_train_nets_mgpu_partial_fc_trains_resumes_and_re_shards_on_one_device(
        tiny_data, tmp_path, caplog, capsys):
    out = str(tmp_path)
    ckpt = os.path.join(out, 'ckpt')
    sharded = ['--partial_fc', 'True']
    first = run_mgpu(mgpu_flags(tiny_data, out, '--max_steps', '2', '--validate_interval', '2',
                                *sharded))
    assert first.returncode == 0, first.stdout
    assert re.search(r'\[lfw\]\[2\]Accuracy-Flip', first.stdout)
    latest = tf.train.latest_checkpoint(ckpt)
    names = dict(tf.train.list_variables(latest))
    for block in ('arcface_loss/embedding_weights_0_4', 'arcface_loss/embedding_weights_4_4'):
        assert names[block] == [512, 4] and names[block + '/Momentum'] == [512, 4]
    assert 'arcface_loss/embedding_weights' not in names
    second = run_mgpu(mgpu_flags(tiny_data, out, '--max_steps', '3', '--validate_interval',
                                 '100', *sharded))
    assert second.returncode == 0, second.stdout
    assert 'resumed from %s' % latest in second.stdout and re.search(r'step 3,', second.stdout)
    latest = tf.train.latest_checkpoint(ckpt)
    # The backbone is the original's: evaluation needs nothing else.
    assert eval_ckpt_file.main(['--ckpt_file', latest, '--image_size', '32,32',
                                '--eval_db_path', tiny_data['raw'], '--eval_datasets', 'lfw',
                                '--batch_size', '8', '--device', 'cpu']) == 0
    # On one device the head is whole: the two blocks (and their Momentum) are re-sharded.
    single = [a for a in mgpu_flags(tiny_data, out, '--max_steps', '4') if a not in
              ('--devices', ','.join(TWO_CPUS))]
    caplog.set_level(logging.INFO)
    assert train_nets.main(single) == 0
    logged = caplog.text
    assert ('arcface_loss/embedding_weights re-sharded from arcface_loss/embedding_weights_0_4, '
            'arcface_loss/embedding_weights_4_4') in logged, logged
    assert ('arcface_loss/embedding_weights/Momentum re-sharded from '
            'arcface_loss/embedding_weights_0_4/Momentum, '
            'arcface_loss/embedding_weights_4_4/Momentum') in logged
    assert re.search(r'step 4,', logged)
    names = dict(tf.train.list_variables(tf.train.latest_checkpoint(ckpt)))
    assert names['arcface_loss/embedding_weights'] == [512, 8]
    # A head missing a block cannot be re-sharded: refused in one line naming both layouts.
    partial = os.path.join(out, 'partial')
    prefix = copy_checkpoint(latest, os.path.join(partial, 'InsightFace_iter_3.ckpt'),
                             leave_out='_4_4')
    before = sorted(os.listdir(partial))
    capsys.readouterr()
    with_partial = single[:single.index('--ckpt_path') + 1] + [partial] + single[
        single.index('--ckpt_path') + 2:]
    assert train_nets.main(with_partial) == 2
    assert capsys.readouterr().err == (
        'train_nets.py: error: --partial_fc: the checkpoint to resume, %s, holds 1 block '
        '(0-3) of 4 classes, which is no whole head (one block of a head written in several: '
        'the others are missing); this run builds the whole head of 8 classes: start afresh with another --ckpt_path\n'
        % prefix)
    assert sorted(os.listdir(partial)) == before  # nothing written


def copy_checkpoint(prefix, to, leave_out):
    """Writes the variables of checkpoint `prefix` but those whose name holds `leave_out`
    to checkpoint `to`; returns its prefix."""
    reader = tf.train.load_checkpoint(prefix)
    with tf.Graph().as_default():
        kept = [tf.Variable(reader.get_tensor(name), name=name)
                for name in reader.get_variable_to_shape_map() if leave_out not in name]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return tf.train.Saver(kept).save(sess, to, write_meta_graph=False)


@pytest.mark.parametrize('extra,message', [
    (['--sample_rate', '0.5'], '--sample_rate 0.5 samples the blocks of a sharded head; add '
                               '--partial_fc True'),
    (['--partial_fc', 'True', '--sample_rate', '0.5'],
     '--sample_rate 0.5: each step samples 2 of the 4 classes of the smallest block, fewer than '
     'the global batch of 4 (a block may hold that many positives); use a rate of at least 1'),
])
def test_impossible_sampling_is_refused_in_one_line(tiny_data, tmp_path, capsys, extra,
                                                    message):
    out = str(tmp_path)
    assert train_nets_mgpu.main(mgpu_flags(tiny_data, out, *extra)) == 2
    assert capsys.readouterr().err == 'train_nets_mgpu.py: error: %s\n' % message
    assert not os.path.exists(os.path.join(out, 'ckpt'))


def test_a_rate_outside_0_1_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_nets.get_parser().parse_args(['--sample_rate', '0'])
    assert exit_info.value.code == 2
    assert "--sample_rate: expected a number in (0, 1], got '0'" in capsys.readouterr().err
