"""The training loop behind train_nets.py: logging, checkpoints, validation, stopping.

`train(plan)` builds the graph (train_graph.py) for a Plan that
setup.prepare checked, resumes or initialises (checkpointing.py), and runs the
loop until plan.last_step, a signal, or an error (which saves and stops).
Iterations run one fixed set of fetches, so a device that compiles one graph
per distinct sess.run (the NPU) compiles the training step and a read of the
weights for validation, plus, with --summary_histograms, the training step with
its gradients as outputs and a read of the variables (summary steps only).
Summaries are built on the host from fetched values (summaries.py). Validation
embeds in a float32 graph and session of its own (validation_graph.py).
"""
import collections
import contextlib
import functools
import json
import logging
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import verification
from devices import distributed, parallel, runtime
from nets import checkpoint_names, network_record
from nets.L_Resnet_E_IR import EMBEDDING_SIZE
from evaluation import ijb_validation, verification_sets
from evaluation.ijb_align import CROP_SIZE as IJB_CROP_SIZE
from training import (checkpointing, stopping, summaries, time_left, train_graph,
                      validation_graph)

# The original's training log line, which users' tools parse (images/s over the last
# --show_info_interval steps, input included, where the original timed one sess.run).
TRAIN_LOG_LINE = ('epoch %d, total_step %d, total loss is %.2f , inference loss is %.2f, '
                  'weight deacy loss is %.2f, training accuracy is %.6f, time %.3f samples/sec')


def _setup_logging(log_dir):
    """Console + a timestamped log file, as the original's train_<date>.log."""
    if not os.path.isdir(log_dir):
        os.makedirs(log_dir)
    path = os.path.join(log_dir, time.strftime('train_%Y-%m-%d-%H-%M-%S.log'))
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
    logging.getLogger().addHandler(handler)
    return path


LoopSpec = collections.namedtuple('LoopSpec', [
    'ckpt_path', 'saver_maxkeep', 'summary_path', 'log_file_path',
    'show_info_interval', 'summary_interval', 'ckpt_interval', 'validate_interval',
    'max_consecutive_overflows',
    'peer_timeout',  # seconds a lost worker may stay silent before the others stop
    'log_device_placement', 'num_threads',  # session options
    'flags',  # {flag: value} of the whole command line, recorded in run_config.json
])


def _record_network(spec, folders):
    """network.json in each checkpoint folder: what evaluation and export build from it."""
    record = network_record.describe(spec.net_depth, spec.net_width, spec.norm,
                                     spec.net_input_size or spec.image_size, EMBEDDING_SIZE)
    for folder in folders:
        network_record.write(folder, record)


def _record_run(flags, log_dir, plan):
    """Writes the flags, versions and data description beside the logs."""
    record = {'flags': {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in sorted(flags.items())},
              'python': sys.version.split()[0], 'tensorflow': tf.__version__,
              'device': plan.device, 'cpu_bfloat16': plan.cpu_bfloat16, 'num_images': plan.manifest['num_images'],
              'num_classes': plan.num_classes, 'steps_per_epoch': plan.steps_per_epoch}
    with open(os.path.join(log_dir, 'run_config.json'), 'w') as out:
        json.dump(record, out, indent=2, sort_keys=True)


def _crossed(previous, step, interval):
    """True when a multiple of `interval` lies in (previous, step]: a loop of
    several steps per sess.run (loop sinking) may pass one without landing on it."""
    return step // interval > previous // interval


def _summary(writer, step, values):
    if writer is None:  # not the chief
        return
    writer.add_summary(summaries.scalar_summary(values), step)


class _Histograms(object):
    """The original's histograms of every gradient and trainable variable.

    The gradients a summary step applied are fetched with that step; the
    variables after it, as the original's separate summary run saw them.
    """

    def __init__(self, tensors):
        self._gradients = tensors['gradients']
        self._variables = tensors['variables']
        specs = {tag: (t.get_shape().as_list(), t.dtype.base_dtype)
                 for tag, t in list(self._gradients.items()) + list(self._variables.items())}
        self._host = summaries.HostHistograms(specs)

    def fetches(self):
        return self._gradients

    def write(self, sess, writer, step, gradients):
        values = dict(gradients)
        values.update(sess.run(self._variables))
        writer.add_summary(self._host.summary(values), step)

    def close(self):
        self._host.close()


def _validation_graph(plan, num_threads):
    """validation_graph.ValidationGraph for this run, or None where nothing is validated."""
    if plan.rank != 0 or not (plan.eval_sets or plan.ijb is not None):
        return None
    spec = plan.graph
    return validation_graph.ValidationGraph(
        spec.net_depth, spec.net_width, spec.norm, spec.image_size, spec.net_input_size,
        spec.eval_batch_size, plan.device, plan.npu_options, num_threads=num_threads,
        ijb_crop_size=IJB_CROP_SIZE if plan.ijb is not None else None)


def _validate(sess, graph, plan, step, writer, checkpoints, stop):
    """Scores every verification set (and IJB with --eval_ijb) with the weights of
    `sess`, and offers the best checkpoint on the set --best_metric names (by
    default the first .bin set).

    Returns:
      [(set name, score, metric name)], e.g. ('lfw', 0.995, 'accuracy').

    Raises:
      stopping.Interrupted: a signal came while a set was scored (nothing is written).
    """
    scores = []
    validation = graph['validation']
    if validation is None:
        return scores
    with stop.interruptible():
        validation.load(sess)
    for name, images, issame in plan.eval_sets:
        with stop.interruptible():
            result = verification.run_verification(validation.session, validation.images,
                                                   validation.embedding, images, issame,
                                                   validation.batch_size)
        verification_sets.log_result(name, step, result, logging.getLogger())
        logging.info('test accuracy is: %s', result.accuracy)
        _summary(writer, step, {name + '/accuracy': result.accuracy, name + '/xnorm': result.xnorm,
                                name + '/val': result.val})
        scores.append((name, result.accuracy, checkpointing.ACCURACY))
    if plan.ijb is not None:
        scores.append(_validate_ijb(validation, plan.ijb, step, writer, stop))
    chosen = [entry for entry in scores if entry[0] == plan.best_metric] or scores[:1]
    if chosen:
        name, value, metric = chosen[0]
        checkpoints.offer_best(sess, step, value, name, metric)
    return scores


def _validate_ijb(validation, ijb, step, writer, stop):
    """IJB-B/C 1:1 verification on the validation graph: (name, TAR, metric)."""
    def run_batch(batch):
        return validation.session.run(validation.ijb_embedding,
                                      {validation.ijb_images: batch})

    with stop.interruptible():
        tars = ijb.score(run_batch, validation.batch_size)
    ijb.log_result(step, tars, logging.getLogger())
    _summary(writer, step, ijb.summary_values(tars))
    return ijb.name, tars[ijb_validation.CHOOSING_FAR], 'TAR@FAR=' + ijb_validation.CHOOSING_FAR


def train(plan):
    """Builds the graph and trains until plan.last_step. Returns the exit code."""
    chief = plan.rank == 0
    loop = plan.loop
    log_path = ending = None
    with tf.Graph().as_default(), distributed.device_scope(plan.cluster):
        graph = train_graph.build_graph(plan.graph, plan)
        # Compares the checkpoint to resume with the graph: a refused run must not
        # replace the resumed run's run_config.json or add a log, so these come after.
        checkpoints = checkpointing.Checkpoints(
            loop.ckpt_path, loop.saver_maxkeep, chief, graph['own_variables'], plan.rank,
            plan.world_size, part_wait_seconds=loop.peer_timeout)
        if chief:
            _record_network(plan.graph, (checkpoints.dir, checkpoints.best_dir))
            log_path = _setup_logging(loop.log_file_path)
            _record_run(loop.flags, loop.log_file_path, plan)
        logging.info('device %s, %d images of %d identities, %d steps per epoch, stopping at '
                     'step %d', plan.device, plan.manifest['num_images'], plan.num_classes,
                     plan.steps_per_epoch, plan.last_step)
        writer = tf.summary.FileWriter(loop.summary_path) if chief else None
        if plan.cpu_bfloat16:
            logging.info('mixed precision: bfloat16 on the CPU (oneDNN); the margin head, the '
                         'losses and the variables stay float32')
        config = runtime.session_config(plan.device, plan.npu_options,
                                        log_device_placement=loop.log_device_placement,
                                        num_threads=loop.num_threads,
                                        bfloat16=plan.cpu_bfloat16)
        parallel.configure_session(config, plan.towers)
        server = distributed.start_server(plan.cluster, config)  # None for one process
        stop = stopping.StopRequest(graph)
        # IJB's workers: forked before the session starts TensorFlow's threads.
        with plan.ijb or contextlib.nullcontext(), \
                tf.Session(server.target if server else '', config=config) as sess:
            if not checkpoints.restore_or_init(sess) and writer is not None:
                writer.add_graph(sess.graph)
            sess.run(graph['init_local'])  # the input iterator and the stop votes
            if graph['broadcast'] is not None:
                sess.run(graph['broadcast'])
                logging.info('rank %d of %d: all variables broadcast from rank 0%s', plan.rank,
                             plan.world_size, ' but this rank\'s blocks of the head'
                             if graph['own_variables'] else '')
            if graph['own_variables'] and not chief and not os.path.isfile(
                    os.path.join(checkpoints.dir, network_record.RECORD_NAME)):
                # Rank 0 wrote it before starting; each rank writes its blocks there.
                logging.error('--ckpt_path %s: rank %d does not see rank 0\'s checkpoint '
                              'folder (no %s); with --partial_fc over several processes each '
                              'writes its blocks of the head there, so it must be one folder '
                              'all of them share', checkpoints.dir, plan.rank,
                              network_record.RECORD_NAME)
                return 2
            # Last: it loads its own loop counters, which an initialiser would reset.
            graph['fetches']['train'] = runtime.loop_train_op(
                sess, graph['train_op'], plan.device, plan.npu_options.iterations_per_loop)
            histograms = None
            if chief and graph['histograms'] is not None:
                histograms = _Histograms(graph['histograms'])
            graph['validation'] = _validation_graph(plan, loop.num_threads)
            try:
                code = _loop(plan, sess, graph, checkpoints, writer, stop, histograms)
            finally:
                if histograms is not None:
                    histograms.close()
                if graph['validation'] is not None:
                    graph['validation'].close()
            if plan.cluster is not None and 0 < code < 128:  # 128 + n: a shared signal stop
                # Stopped by an error, possibly a lost peer: no barrier, whose peers may be
                # gone, and a close that cannot wait for them without end.
                ending = distributed.end_process_after(plan.loop.peer_timeout, code)
            elif graph['barrier'] is not None:
                distributed.leave(sess, graph['barrier'])
    if ending is not None:
        ending.cancel()  # the session closed
    if not chief:
        return code
    writer.close()
    logging.info('checkpoints: %s', os.path.abspath(loop.ckpt_path))
    logging.info('logs: %s', os.path.abspath(log_path))
    logging.info('TensorBoard: tensorboard --logdir %s', os.path.abspath(loop.summary_path))
    return code


def _loop(plan, sess, graph, checkpoints, writer, stop, histograms=None):
    """Trains from the global step to plan.last_step. Returns the exit code.

    An error inside the loop (the input pipeline, a step, validation, a save)
    ends it with one line naming the cause and, when the session still runs,
    a checkpoint of the last completed step: a rerun resumes there.
    """
    step = int(sess.run(graph['global_step']))
    if step >= plan.last_step:
        logging.info('global step %d already reached the last step %d; nothing to do',
                     step, plan.last_step)
        return 0
    iterations = plan.npu_options.iterations_per_loop
    if step % iterations:
        logging.error('cannot resume at global step %d with --iterations_per_loop %d: each '
                      'sess.run trains %d steps, so the step must be a multiple of it; resume '
                      'with --iterations_per_loop 1 up to a multiple first', step, iterations,
                      iterations)
        return 2
    state = {'step': step, 'saved': step}
    graph['peer_watch'] = None
    if plan.cluster is not None:
        graph['peer_watch'] = distributed.PeerWatch(
            plan.cluster, plan.loop.peer_timeout,
            functools.partial(_peer_lost, checkpoints, state, plan.loop.peer_timeout)).start()
    try:
        return _train_steps(plan, sess, graph, checkpoints, writer, stop, histograms,
                            state)
    except checkpointing.CheckpointWriteError as error:
        logging.error('training stopped at step %d: %s; %s', state['step'], error,
                      _last_checkpoint(checkpoints))
        return 1
    except (tf.errors.OpError, OSError, ValueError, ijb_validation.ValidationError) as error:
        # ValueError includes an IJB image that does not decode (IJBFormatError).
        bad = graph['bad_records']
        cause = _bad_records_cause(bad) if bad.exceeded else checkpointing.cause_line(error)
        if plan.cluster is not None and isinstance(error, tf.errors.OpError):
            gone = distributed.unreachable_peers(plan.cluster)
            if gone:
                cause = '%s stopped answering (%s)' % (
                    ', '.join('worker %d (%s)' % peer for peer in gone), cause)
                if checkpoints.num_parts > 1:  # a lost worker's blocks cannot be saved
                    return _stop_after_error(sess, graph, checkpoints, state, cause,
                                             save=False)
        return _stop_after_error(sess, graph, checkpoints, state, cause)
    finally:
        if graph['peer_watch'] is not None:
            graph['peer_watch'].stop()


def _peer_lost(checkpoints, state, timeout, rank, host, seconds):
    """PeerWatch's on_lost: one line, then this process ends (exit 1) without saving.

    The main thread waits inside a step for the lost worker and cannot be
    woken, so the process ends from here (distributed.exit_now); a save under way
    finishes first, so the chief's last complete checkpoint stays its latest.
    """
    with checkpoints.saving:
        logging.error('training stopped after step %d: worker %d (%s) has not answered for '
                      '%d s (--peer_timeout %d); %s', state['step'], rank, host, seconds,
                      timeout, _last_checkpoint(checkpoints))
        distributed.exit_now(1)


def _bad_records_cause(bad):
    """The stop line's cause when the input skipped more than --max_bad_records."""
    return ('more than --max_bad_records %d bad records (%d; the last: %s)'
            % (bad.max_count, bad.count, bad.last))


def _last_checkpoint(checkpoints):
    if not checkpoints.chief:
        return 'rank 0 keeps the checkpoints'
    if checkpoints.latest:
        return 'the last checkpoint is %s' % checkpoints.latest
    return 'no checkpoint written yet'


def _stop_after_error(sess, graph, checkpoints, state, cause, save=True):
    """Saves the last completed step if the session still runs (and `save`: the blocks
    of a head spread over processes cannot be saved without every process); logs one
    line; returns 1."""
    try:
        step = int(sess.run(graph['global_step']))
    except tf.errors.OpError as error:
        logging.error('training stopped after step %d: %s; the session no longer runs (%s), '
                      'so %s', state['step'], cause, checkpointing.cause_line(error), _last_checkpoint(checkpoints))
        return 1
    if step == state['saved'] or not checkpoints.writes or not save:  # nothing to save
        logging.error('training stopped at step %d: %s; %s', step, cause,
                      'checkpoint %s' % checkpoints.latest if checkpoints.latest
                      else _last_checkpoint(checkpoints))
        return 1
    try:
        path = checkpoints.save(sess, step)
    except checkpointing.CheckpointWriteError as error:
        logging.error('training stopped at step %d: %s; and %s; %s', step, cause, error,
                      _last_checkpoint(checkpoints))
        return 1
    logging.error('training stopped at step %d: %s; %s', step, cause,
                  'checkpoint %s' % path if path else
                  'this rank\'s blocks of the head written for rank 0\'s checkpoint')
    return 1


def _train_steps(plan, sess, graph, checkpoints, writer, stop, histograms, state):
    """_loop's iterations; keeps state['step'] (completed) and state['saved'] current.

    Each sess.run trains `iterations` steps (--iterations_per_loop: the NPU
    runs them on the device); logging, summaries, checkpoints and validation
    happen after the run whose steps reached their interval.
    """
    step = state['step']
    iterations = plan.npu_options.iterations_per_loop
    loop = plan.loop
    window_start, window_step = time.time(), step
    clock = time_left.TimeLeft(step, plan.last_step, {'validation': loop.validate_interval,
                                                      'checkpoint': loop.ckpt_interval})
    values = {}
    scaled = 'overflow' in graph['fetches']
    overflows = consecutive = 0
    abandoned = ''
    bad = graph['bad_records']
    summary_fetches = dict(graph['fetches'])
    if histograms is not None:
        summary_fetches['gradients'] = histograms.fetches()
    while step < plan.last_step and stop.signum is None:
        stop.vote(sess, bad.exceeded)
        # A run that reaches a summary step fetches its gradients with it.
        summary_next = _crossed(step, step + iterations, loop.summary_interval)
        values = sess.run(summary_fetches if summary_next else graph['fetches'])
        previous, step = step, int(values['step'])
        state['step'] = step
        stop.agree(values)
        if graph['peer_watch'] is not None and (step >= plan.last_step
                                                or stop.signum is not None):
            graph['peer_watch'].stop()  # the last step together: the others may leave now
        if stop.input_failed:
            cause = (_bad_records_cause(bad) if bad.exceeded
                     else 'another rank\'s input failed (see its log)')
            return _stop_after_error(sess, graph, checkpoints, state, cause)
        overflowed = scaled and bool(values['overflow'])  # the run's last step
        if scaled:
            # Skipped updates do not advance global_step (a non-finite loss on
            # them is an overflow too); only a long run of them means a broken model.
            skipped = iterations - (step - previous)
            if skipped:
                overflows += skipped
                consecutive = consecutive + skipped if step == previous else int(overflowed)
                if iterations == 1:
                    logging.info('gradient overflow after step %d: update skipped (%d '
                                 'overflowed steps skipped so far)', step, overflows)
                else:
                    logging.info('gradient overflow in the %d steps after step %d: %d updates '
                                 'skipped (%d so far)', iterations, previous, skipped, overflows)
            else:
                consecutive = 0
            if consecutive >= loop.max_consecutive_overflows:
                logging.error('%d consecutive gradient overflows (loss %s) after step %d: '
                              'stopping; no checkpoint written (the last good one is %s)',
                              consecutive, values['total_loss'], step,
                              checkpoint_names.latest_in_folder(loop.ckpt_path))
                return 1
            if step == previous:
                continue
        if not overflowed and (stop.non_finite or not np.isfinite(values['total_loss'])):
            here = not np.isfinite(values['total_loss'])
            logging.error('non-finite loss (%s) at step %d: stopping; no checkpoint written '
                          '(the last good one is %s)',
                          values['total_loss'] if here else 'on another rank', step,
                          checkpoint_names.latest_in_folder(loop.ckpt_path))
            return 1
        if _crossed(previous, step, loop.show_info_interval) or step == plan.last_step:
            now = time.time()
            speed = (step - window_step) * plan.graph.batch_size / max(now - window_start, 1e-9)
            window_start, window_step = now, step
            values['images_per_sec'] = speed
            # The original's line, then what it did not print.
            logging.info(TRAIN_LOG_LINE + ', lr %g%s%s%s', step // plan.steps_per_epoch, step,
                         values['total_loss'], values['inference_loss'], values['wd_loss'],
                         values['accuracy'], speed, values['lr'],
                         ', %d overflowed steps skipped' % overflows if scaled else '',
                         ', %d bad records skipped' % bad.count if bad.count else '',
                         clock.suffix(step))
        if _crossed(previous, step, loop.summary_interval):
            # The original's tags (its 'leraning_rate' spelling too), plus ours.
            scalars = {k: values[k] for k in ('total_loss', 'inference_loss', 'wd_loss',
                                              'accuracy', 'lr')}
            scalars['leraning_rate'] = values['lr']
            if scaled:
                scalars['overflow_steps'] = overflows
            scalars['bad_records'] = bad.count  # skipped by the input pipeline, so far
            _summary(writer, step, scalars)
            if histograms is not None and 'gradients' in values:
                histograms.write(sess, writer, step, values['gradients'])
        if _crossed(previous, step, loop.ckpt_interval):
            started = time.time()
            checkpoints.save(sess, step)
            state['saved'] = step
            clock.paused('checkpoint', time.time() - started)
        if _crossed(previous, step, loop.validate_interval) or step == plan.last_step:
            started = time.time()
            try:
                _validate(sess, graph, plan, step, writer, checkpoints, stop)
            except stopping.Interrupted:
                abandoned = ' (validation abandoned)'
            window_start, window_step = time.time(), step  # validation is not throughput
            clock.paused('validation', window_start - started)
    if state['saved'] != step:
        checkpoints.save(sess, step)
        state['saved'] = step
    if stop.signum is not None:
        logging.info('stopped by signal %d at step %d%s%s', stop.signum, step, abandoned,
                     '; checkpoint %s' % checkpoints.latest if checkpoints.chief else '')
        return 128 + stop.signum
    return 0
