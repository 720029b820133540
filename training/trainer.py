"""The training loop behind train_nets.py: graph, resume, logging, checkpoints, validation.

`prepare` checks every input (dataset, verification sets, flags against the
data, the checkpoint to resume, the output folders) before any graph is
built; `train` builds the graph and runs the loop.
Iterations run one fixed set of fetches, so a device that compiles one graph
per distinct sess.run (the NPU) compiles the training step and the validation
embedding, plus, with --summary_histograms, the training step with its
gradients as outputs and a read of the variables (summary steps only).
Summaries are built on the host from fetched values (summaries.py).

Checkpoints go through tf.train.Saver, which writes each file under a
temporary name and renames it, and updates the `checkpoint` index last and
atomically: a run killed at any moment resumes from the last complete one.
"""
import collections
import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import verification
from data import eval_data_reader, image_ops, input_pipeline
from data.cli import UsageError
from data.manifest import ManifestError, load_manifest
from devices import distributed, parallel, runtime
from losses import objective
from nets import inference
from training import checkpoint_utils, cli_flags, summaries

CKPT_PREFIX = 'InsightFace_iter_%d.ckpt'  # the original's checkpoint names
REFERENCE_BATCH = 512  # --lr_steps count iterations at this batch, as in the original
# The original's training log line, which users' tools parse (images/s over the last
# --show_info_interval steps, input included, where the original timed one sess.run).
TRAIN_LOG_LINE = ('epoch %d, total_step %d, total loss is %.2f , inference loss is %.2f, '
                  'weight deacy loss is %.2f, training accuracy is %.6f, time %.3f samples/sec')
BEST_SUBDIR = 'best'
BEST_INFO = 'best.json'

Plan = collections.namedtuple('Plan', [
    'manifest',         # the dataset manifest (data.manifest.load_manifest)
    'num_classes',
    'steps_per_epoch',
    'last_step',        # the global step training stops at
    'eval_sets',        # [(name, images uint8 [N,H,W,3], issame bool [N/2])]
    'device',
    'rank',             # this process's rank among world_size data-parallel workers
    'world_size',
    'loss_scaling',     # runtime.LossScaling, or None when gradients stay float32
    'towers',           # in-graph tower devices (train_nets_mgpu.py); [] for one device
    'cluster',          # distributed.Cluster of TensorFlow gRPC workers, or None
    'lr_boundaries',    # learning-rate boundaries in global steps (lr_boundaries)
])


def prepare(args):
    """Checks data, flags, the checkpoint to resume and the output folders before any work.

    Everything that would otherwise stop a run later is found here, before a
    graph is built: a verification set that cannot be scored (at the first
    validation), a checkpoint of another network (at the restore), an output
    folder that cannot be written (at the first log line or checkpoint).

    Raises:
      UsageError: with a message naming the file or flag and what was expected.
      CheckpointError: the checkpoint to resume does not fit the flags.
    """
    try:
        manifest = load_manifest(args.tfrecords_file_path)
    except ManifestError as error:
        raise UsageError('%s (or run the demo: make demo)' % error)
    data_size = tuple(manifest['image_size'])
    if data_size != tuple(args.image_size):
        raise UsageError('--image_size %d,%d does not match the data in %s, which holds %d,%d '
                         'images' % (args.image_size + (args.tfrecords_file_path,) + data_size))
    num_classes = args.num_output or manifest['num_classes']
    if num_classes < manifest['num_classes']:
        raise UsageError('--num_output %d is smaller than the %d identities of %s'
                         % (num_classes, manifest['num_classes'], args.tfrecords_file_path))
    try:
        device = runtime.select_device(args.device)
        scaling = runtime.loss_scaling(
            device, args.precision_mode, args.mixed_precision, args.loss_scale,
            args.init_loss_scale, args.incr_every_n_steps, args.decr_every_n_nan_or_inf,
            args.decr_ratio)
    except ValueError as error:
        raise UsageError(str(error))
    towers = _towers(args, device)
    cluster = _tf_cluster(args, device)
    rank, world_size = (cluster.rank, len(cluster.hosts)) if cluster else _hccl_ranks(device)
    steps_per_epoch = manifest['num_images'] // (args.batch_size * world_size)
    if steps_per_epoch < 1:
        raise UsageError('--batch_size %d is larger than the %d images of %s'
                         % (args.batch_size, manifest['num_images'], args.tfrecords_file_path))
    lr_boundaries_ = lr_boundaries(args.lr_steps, args.batch_size * world_size)
    last_step = steps_per_epoch * args.epoch
    if args.max_steps is not None:
        last_step = min(last_step, args.max_steps)
    eval_sets = []
    for name in args.eval_datasets:
        path = os.path.join(args.eval_db_path, name + '.bin')
        if not os.path.isfile(path):
            raise UsageError('verification set %s not found (--eval_db_path %s, '
                             '--eval_datasets %s)' % (path, args.eval_db_path, name))
        try:
            images, issame = eval_data_reader.load_bin(path, tuple(args.image_size))
        except ValueError as error:
            raise UsageError(str(error))
        try:  # eval_ckpt_file.py's rule, or validation would fail after training
            verification.check_scorable(len(issame), path)
        except ValueError as error:
            raise UsageError('%s (--eval_datasets %s)' % (error, name))
        eval_sets.append((name, images, np.asarray(issame, bool)))
    latest = checkpoint_utils.latest_in_folder(args.ckpt_path) if os.path.isdir(
        args.ckpt_path) else None
    if latest:
        checkpoint_utils.check_training_resume(latest, args.net_depth, args.loss_type,
                                               num_classes)
    if rank == 0:  # the chief writes every output; created last, once all else is known good
        _check_output_folders(args.ckpt_path, args.summary_path, args.log_file_path)
    return Plan(manifest, num_classes, steps_per_epoch, last_step, eval_sets, device, rank,
                world_size, scaling, towers, cluster, lr_boundaries_)


def _check_output_folders(ckpt_path, summary_path, log_file_path):
    """Creates the output folders (and ckpt_path/best) and checks that they can be written."""
    for path, flag in ((ckpt_path, '--ckpt_path'), (os.path.join(ckpt_path, BEST_SUBDIR),
                                                    '--ckpt_path'),
                       (summary_path, '--summary_path'), (log_file_path, '--log_file_path')):
        problem = cli_flags.output_folder_problem(path, flag)
        if problem:
            raise UsageError(problem)


def _hccl_ranks(device):
    """(rank, world_size) of an NPU process started per device with HCCL's env; else (0, 1)."""
    if device != 'npu':
        return 0, 1
    try:
        return runtime.hccl_ranks()
    except ValueError as error:
        raise UsageError(str(error))


def _towers(args, device):
    """The tower devices of train_nets_mgpu.py's --num_gpus/--devices ([] for train_nets.py)."""
    try:
        towers = parallel.resolve_devices(getattr(args, 'num_gpus', None),
                                          getattr(args, 'devices', None))
    except ValueError as error:
        raise UsageError(str(error))
    if towers and device == 'npu':
        raise UsageError('in-graph towers run on GPUs or CPUs; on Ascend NPUs start one '
                         'process per device with HCCL (RANK_SIZE, RANK_ID, ...; see README)')
    if towers and args.batch_size % len(towers):
        raise UsageError('--batch_size %d is not divisible by the %d tower devices (%s)'
                         % (args.batch_size, len(towers), ','.join(towers)))
    return towers


def _tf_cluster(args, device):
    """The TensorFlow gRPC cluster of --worker_hosts/--task_index or TF_CONFIG, or None."""
    try:
        cluster = distributed.parse_cluster(args.worker_hosts, args.task_index)
    except ValueError as error:
        raise UsageError(str(error))
    if cluster is not None and device == 'npu':
        raise UsageError('--worker_hosts/TF_CONFIG: TensorFlow\'s gRPC collectives do not run '
                         'on the NPU; start one process per device with HCCL (RANK_SIZE, '
                         'RANK_ID, ...; see README)')
    return cluster


def lr_boundaries(lr_steps, global_batch):
    """The learning-rate boundaries in global steps, by the original's arithmetic.

    --lr_steps count iterations at batch 512; the original multiplies them by
    int(512 / batch_size), the integer factor taken first (batch 136: 3 x 40000
    = 120000, not 150588). `global_batch` is the batch of one step over all
    devices (towers and workers together). Above 512 the original's factor is
    0 and every boundary would be 0; there the factor is 512 / batch, rounded
    per boundary.
    """
    factor = REFERENCE_BATCH // global_batch
    if factor >= 1:
        return [factor * step for step in lr_steps]
    return [max(1, int(round(step * REFERENCE_BATCH / float(global_batch)))) for step in lr_steps]


def clip_backbone_gradients(max_norm, scope='resnet_v1_'):
    """fn(grads_and_vars) clipping the backbone's gradients to a global norm of max_norm.

    insightface's PyTorch trainer (arcface_torch) clips its backbone's gradients
    to norm 5 and not the margin head's; without it a scale-64 margin head
    trained from scratch can blow the backbone up in the first steps.
    """
    def clip(grads_and_vars):
        chosen = [i for i, (grad, var) in enumerate(grads_and_vars)
                  if grad is not None and var.op.name.startswith(scope)]
        clipped, _ = tf.clip_by_global_norm([grads_and_vars[i][0] for i in chosen], max_norm)
        result = list(grads_and_vars)
        for i, grad in zip(chosen, clipped):
            result[i] = (grad, grads_and_vars[i][1])
        return result
    return clip


def learning_rate(global_step, boundaries, values, warmup_steps=0):
    """The original's piecewise-constant schedule, with an optional linear warm-up.

    Boundaries count global steps, which advance once per iteration here
    (the original's advanced twice, so it decayed after half as many
    iterations; see README). The warm-up scales the rate during the first
    `warmup_steps` iterations; 0: off.
    """
    rate = tf.train.piecewise_constant(global_step, list(boundaries), list(values))
    if warmup_steps:
        progress = tf.cast(global_step + 1, tf.float32) / float(warmup_steps)
        rate = rate * tf.minimum(1.0, progress)
    return tf.identity(rate, name='learning_rate')


def _setup_logging(log_dir):
    """Console + a timestamped log file, as the original's train_<date>.log."""
    if not os.path.isdir(log_dir):
        os.makedirs(log_dir)
    path = os.path.join(log_dir, time.strftime('train_%Y-%m-%d-%H-%M-%S.log'))
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
    logging.getLogger().addHandler(handler)
    return path


def _record_run(args, log_dir, plan):
    """Writes the flags, versions and data description beside the logs."""
    record = {'flags': {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in sorted(vars(args).items())},
              'python': sys.version.split()[0], 'tensorflow': tf.__version__,
              'device': plan.device, 'num_images': plan.manifest['num_images'],
              'num_classes': plan.num_classes, 'steps_per_epoch': plan.steps_per_epoch}
    with open(os.path.join(log_dir, 'run_config.json'), 'w') as out:
        json.dump(record, out, indent=2, sort_keys=True)


class _Interrupted(Exception):
    """A signal during validation: raised by _StopRequest to abandon it."""


class _StopRequest(object):
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step.

    With TensorFlow gRPC workers (graph['stop_feed']), a signal travels with
    the next step and `signum` is set on every worker from its result, so
    all of them stop after the same step (see distributed.shared_stop).
    Validation can take minutes, longer than a scheduler's grace period
    before SIGKILL: inside `interruptible()` a signal also raises
    _Interrupted (one process only; gRPC workers must stop together).
    """

    def __init__(self, graph):
        self.signum = None      # the loop stops when set
        self.received = None    # a signal to this process
        self._feed = graph.get('stop_feed')
        self._interruptible = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, unused_frame):
        self.received = signum
        if self._feed is None:
            self.signum = signum
            if self._interruptible:
                self._interruptible = False
                raise _Interrupted()

    @contextlib.contextmanager
    def interruptible(self):
        """A block (read-only work: validation) that a signal abandons."""
        if self.signum is not None:
            raise _Interrupted()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def feed_dict(self):
        return None if self._feed is None else {self._feed: float(self.received or 0)}

    def agree(self, values):
        if self.signum is None and values.get('stop_signal', 0) > 0:
            self.signum = int(values['stop_signal'])


def margin_args(args):
    """The head's keyword arguments from the flags (absent: the head's default)."""
    if args.loss_type == 'combine':
        m1, m2, m3 = args.combine_margins
        result = {'m1': m1, 'm2': m2, 'm3': m3}
    else:
        result = {} if args.margin_m is None else {'m': args.margin_m}
    if args.margin_s is not None:
        result['s'] = args.margin_s
    return result


def augmentation(args):
    """input_pipeline arguments of --augment and --random_erase.

    At --augment_strength 1: shifts up to 1/14 of the width (8 pixels at 112),
    crops of 90-100% of the side, brightness +-0.1, contrast x0.8-1.2; the
    strength scales every range (crops and contrast bounded so images stay images).
    --random_erase works with or without --augment.
    """
    result = {}
    if args.augment:
        strength = args.augment_strength
        result.update({
            'max_translation': max(1, int(round(args.image_size[1] / 14.0 * strength))),
            'crop_scale': (max(0.5, 1.0 - 0.1 * strength), 1.0),
            'brightness_delta': 0.1 * strength,
            'contrast_range': (max(0.2, 1.0 - 0.2 * strength), 1.0 + 0.2 * strength)})
    if args.random_erase:
        result['erase_max_side'] = args.random_erase
    return result


def build_graph(args, plan):
    """The training and validation graphs; returns a dict of the tensors the loop uses."""
    if args.seed is not None:
        tf.set_random_seed(args.seed)
    global_step = tf.train.get_or_create_global_step()
    # A record that cannot be read or decoded is skipped and named, not a crash that
    # every rerun meets again; over --max_bad_records the pipeline fails (see _loop).
    bad_records = input_pipeline.BadRecords(args.max_bad_records)
    images, labels = input_pipeline.make_input(
        plan.manifest['shard_paths'], args.batch_size, tuple(args.image_size),
        buffer_size=args.buffer_size, seed=args.seed, num_shards=plan.world_size,
        shard_index=plan.rank, on_bad_record=bad_records,
        records_per_file=[shard['num_images'] for shard in plan.manifest.get('shards', ())],
        **augmentation(args))
    images = image_ops.resize_for_network(images, args.net_input_size)

    def loss_fn(batch_images, batch_labels):
        return objective.training_losses(
            batch_images, batch_labels, args.net_depth, plan.num_classes, args.loss_type,
            margin_args(args), args.weight_decay, args.keep_prob, runtime.dropout_fn(plan.device))

    lr = learning_rate(global_step, plan.lr_boundaries, args.lr_values, args.warmup_steps)
    optimizer = tf.train.MomentumOptimizer(lr, args.momentum)
    optimizer = runtime.wrap_optimizer(optimizer, plan.device, plan.loss_scaling,
                                       distributed=plan.world_size > 1)
    collectives = distributed.Collectives(plan.cluster) if plan.cluster else None
    losses, train_op, grads_and_vars = parallel.build_train_op(
        images, labels, loss_fn, optimizer, global_step, devices=plan.towers,
        combine_fn=collectives.all_reduce_mean if collectives else None,
        gradient_fn=clip_backbone_gradients(args.clip_gradient_norm)
        if args.clip_gradient_norm else None)
    eval_batch = args.eval_batch_size or args.batch_size
    eval_images, eval_embedding = inference.inference_graph(
        args.net_depth, tuple(args.image_size), eval_batch, reuse=True,
        net_input_size=args.net_input_size)
    fetches = {'train': train_op, 'step': global_step, 'lr': lr, 'total_loss': losses.total,
               'inference_loss': losses.inference, 'wd_loss': losses.weight_decay,
               'accuracy': losses.accuracy}
    overflow = runtime.overflow_indicator(plan.device, plan.loss_scaling)
    if overflow is not None:  # the step's update was skipped (loss scaling)
        fetches['overflow'] = overflow
    stop_feed = None
    if collectives is not None:  # a signal to any worker stops all after the same step
        stop_feed, fetches['stop_signal'] = distributed.shared_stop(collectives)
    broadcast = None
    if plan.device == 'npu' and plan.world_size > 1:  # every variable, so built last
        broadcast = runtime.broadcast_variables_op(plan.device)
    elif collectives is not None:  # TensorFlow gRPC workers
        broadcast = collectives.broadcast_variables()
    histograms = None
    if args.summary_histograms:
        histograms = {'gradients': {var.op.name + '/gradients': grad
                                    for grad, var in grads_and_vars if grad is not None},
                      'variables': {var.op.name: var for var in tf.trainable_variables()}}
    return {'fetches': fetches, 'histograms': histograms, 'global_step': global_step,
            'bad_records': bad_records,
            'eval_images': eval_images,
            'eval_embedding': eval_embedding, 'eval_batch': eval_batch, 'broadcast': broadcast,
            'barrier': collectives.barrier() if collectives else None, 'stop_feed': stop_feed}


class _Checkpoints(object):
    """Periodic checkpoints, the best-accuracy checkpoint, and resume.

    Every worker restores; only the chief (rank 0) writes.
    """

    def __init__(self, ckpt_dir, max_to_keep, chief=True):
        self.dir = ckpt_dir
        self.best_dir = os.path.join(ckpt_dir, BEST_SUBDIR)
        self.chief = chief
        for path in (self.dir, self.best_dir):
            if chief and not os.path.isdir(path):
                os.makedirs(path)
        # Relative names in the `checkpoint` index: a copied folder resumes from its own files.
        self.saver = tf.train.Saver(max_to_keep=max_to_keep, save_relative_paths=True)
        self.best_saver = tf.train.Saver(max_to_keep=1, save_relative_paths=True)
        self.best = self._read_best()
        self.latest = checkpoint_utils.latest_in_folder(self.dir)
        self.restore_plan = None
        if self.latest:
            self.restore_plan = checkpoint_utils.plan_training_restore(
                self.latest, tf.global_variables())

    def _read_best(self):
        path = os.path.join(self.best_dir, BEST_INFO)
        if os.path.isfile(path):
            with open(path) as info:
                return json.load(info)
        return {'accuracy': -1.0}

    def restore_or_init(self, sess):
        """Restores the latest checkpoint, or initialises; returns the checkpoint or None."""
        if not self.latest:
            sess.run(tf.global_variables_initializer())
            return None
        converted = checkpoint_utils.apply_training_restore(sess, self.restore_plan)
        logging.info('resumed from %s', self.latest)
        for graph_name, stored in self.restore_plan.aliased:
            logging.info('  %s read from %s', graph_name, stored)
        for var in self.restore_plan.initialised:
            logging.info('  %s is not in the checkpoint: starts afresh', var.op.name)
        for name, dtype_name, value in converted:
            if name == 'global_step':
                # The original's int32 step, which it advanced twice per iteration.
                logging.info('  global_step %d stored as %s, as the original InsightFace_TF '
                             'writes it; the original advanced it twice per iteration '
                             '(optimizer and increment op), this trainer once, so training '
                             'continues at step %d with the learning rate the original had '
                             'at that global step', value, dtype_name, value)
            else:
                logging.info('  %s %d converted from %s', name, value, dtype_name)
        return self.latest

    def save(self, sess, step):
        """Saves the checkpoint of `step`; returns its path (None off the chief).

        Raises:
          CheckpointWriteError: the save failed (its partial files are removed).
        """
        if not self.chief:
            return None
        prefix = os.path.join(self.dir, CKPT_PREFIX % step)
        try:
            path = self.saver.save(sess, prefix, write_meta_graph=False)
        except (tf.errors.OpError, OSError, ValueError) as error:
            # Files of an unfinished save are referenced by no index: remove them so
            # that a full disk gets its space back (best effort: it may be read-only).
            for partial in glob.glob(prefix + '.*') + glob.glob(prefix + '_temp*'):
                if os.path.isdir(partial):
                    shutil.rmtree(partial, ignore_errors=True)
                else:
                    try:
                        os.remove(partial)
                    except OSError:
                        pass
            raise CheckpointWriteError(prefix, error)
        self.latest = path
        logging.info('checkpoint %s', path)
        return path

    def offer_best(self, sess, step, accuracy, dataset):
        if not self.chief or accuracy <= self.best['accuracy']:
            return
        path = self.best_saver.save(sess, os.path.join(self.best_dir, CKPT_PREFIX % step),
                                    write_meta_graph=False)
        self.best = {'accuracy': accuracy, 'step': step, 'dataset': dataset, 'checkpoint': path}
        temp = os.path.join(self.best_dir, BEST_INFO + '.tmp')
        with open(temp, 'w') as info:
            json.dump(self.best, info, indent=2)
        os.rename(temp, os.path.join(self.best_dir, BEST_INFO))
        logging.info('best %s accuracy so far: %.5f at step %d -> %s', dataset, accuracy, step, path)


class CheckpointWriteError(Exception):
    """A checkpoint could not be written; str() is one line with the cause."""

    def __init__(self, prefix, error):
        super(CheckpointWriteError, self).__init__(
            'cannot write checkpoint %s (%s)' % (prefix, _cause(error, short=True)))


def _cause(error, short=False):
    """One line for an exception: TensorFlow's message without its graph context.

    TensorFlow 2 starts with 'Graph execution error:' and the op's stack; the
    cause is the first line that is neither. short: only its last '; ' part,
    the operating system's reason for a file error ('Permission denied', 'No
    space left on device'), not the temporary file's name.
    """
    message = getattr(error, 'message', None) or str(error) or type(error).__name__
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line[0].isspace()
             and not line.startswith(('Graph execution error', 'Detected at node', 'Node:',
                                      '[[', 'Original stack trace'))]
    line = lines[0] if lines else type(error).__name__
    if short and '; ' in line:
        line = line.rsplit('; ', 1)[1]
    elif isinstance(error, tf.errors.OpError):
        line = '%s: %s' % (type(error).__name__, line)
    return line


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


def _validate(sess, graph, plan, step, writer, checkpoints, stop):
    """Scores every verification set and offers the best checkpoint.

    Raises:
      _Interrupted: a signal came while a set was scored (nothing is written).
    """
    accuracies = []
    if plan.rank != 0:
        return accuracies
    for name, images, issame in plan.eval_sets:
        with stop.interruptible():
            result = verification.run_verification(sess, graph['eval_images'],
                                                   graph['eval_embedding'], images, issame,
                                                   graph['eval_batch'])
        verification.log_result(name, step, result, logging.getLogger())
        logging.info('test accuracy is: %s', result.accuracy)
        _summary(writer, step, {name + '/accuracy': result.accuracy, name + '/xnorm': result.xnorm,
                                name + '/val': result.val})
        accuracies.append((name, result.accuracy))
    if accuracies:
        name, accuracy = accuracies[0]
        checkpoints.offer_best(sess, step, accuracy, name)
    return accuracies


def train(args, plan):
    """Builds the graph and trains until plan.last_step. Returns the exit code."""
    chief = plan.rank == 0
    log_path = None
    with tf.Graph().as_default(), distributed.device_scope(plan.cluster):
        graph = build_graph(args, plan)
        # Compares the checkpoint to resume with the graph: a refused run must not
        # replace the resumed run's run_config.json or add a log, so these come after.
        checkpoints = _Checkpoints(args.ckpt_path, args.saver_maxkeep, chief)
        if chief:
            log_path = _setup_logging(args.log_file_path)
            _record_run(args, args.log_file_path, plan)
        logging.info('device %s, %d images of %d identities, %d steps per epoch, stopping at '
                     'step %d', plan.device, plan.manifest['num_images'], plan.num_classes,
                     plan.steps_per_epoch, plan.last_step)
        writer = tf.summary.FileWriter(args.summary_path) if chief else None
        config = runtime.session_config(plan.device, args.precision_mode,
                                        graph_memory_max_size=args.graph_memory_max_size,
                                        variable_memory_max_size=args.variable_memory_max_size,
                                        log_device_placement=args.log_device_mapping,
                                        num_threads=args.num_threads)
        parallel.configure_session(config, plan.towers)
        server = distributed.start_server(plan.cluster, config)  # None for one process
        stop = _StopRequest(graph)
        with tf.Session(server.target if server else '', config=config) as sess:
            if not checkpoints.restore_or_init(sess) and writer is not None:
                writer.add_graph(sess.graph)
            if graph['broadcast'] is not None:
                sess.run(graph['broadcast'])
                logging.info('rank %d of %d: all variables broadcast from rank 0', plan.rank,
                             plan.world_size)
            histograms = None
            if chief and graph['histograms'] is not None:
                histograms = _Histograms(graph['histograms'])
            try:
                code = _loop(args, plan, sess, graph, checkpoints, writer, stop, histograms)
            finally:
                if histograms is not None:
                    histograms.close()
            if graph['barrier'] is not None:
                distributed.leave(sess, graph['barrier'])
    if not chief:
        return code
    writer.close()
    logging.info('checkpoints: %s', os.path.abspath(args.ckpt_path))
    logging.info('logs: %s', os.path.abspath(log_path))
    logging.info('TensorBoard: tensorboard --logdir %s', os.path.abspath(args.summary_path))
    return code


def _loop(args, plan, sess, graph, checkpoints, writer, stop, histograms=None):
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
    state = {'step': step, 'saved': step}
    try:
        return _train_steps(args, plan, sess, graph, checkpoints, writer, stop, histograms,
                            state)
    except CheckpointWriteError as error:
        logging.error('training stopped at step %d: %s; %s', state['step'], error,
                      _last_checkpoint(checkpoints))
        return 1
    except (tf.errors.OpError, OSError, ValueError) as error:
        bad = graph['bad_records']
        if bad.exceeded:
            cause = ('more than --max_bad_records %d bad records (%d; the last: %s)'
                     % (bad.max_count, bad.count, bad.last))
        else:
            cause = _cause(error)
        return _stop_after_error(sess, graph, checkpoints, state, cause)


def _last_checkpoint(checkpoints):
    if checkpoints.latest:
        return 'the last checkpoint is %s' % checkpoints.latest
    return 'no checkpoint written yet'


def _stop_after_error(sess, graph, checkpoints, state, cause):
    """Saves the last completed step if the session still runs; logs one line; returns 1."""
    try:
        step = int(sess.run(graph['global_step']))
    except tf.errors.OpError as error:
        logging.error('training stopped after step %d: %s; the session no longer runs (%s), '
                      'so %s', state['step'], cause, _cause(error), _last_checkpoint(checkpoints))
        return 1
    if step == state['saved'] or not checkpoints.chief:  # nothing new to save
        logging.error('training stopped at step %d: %s; %s', step, cause,
                      'checkpoint %s' % checkpoints.latest if checkpoints.latest
                      else _last_checkpoint(checkpoints))
        return 1
    try:
        path = checkpoints.save(sess, step)
    except CheckpointWriteError as error:
        logging.error('training stopped at step %d: %s; and %s; %s', step, cause, error,
                      _last_checkpoint(checkpoints))
        return 1
    logging.error('training stopped at step %d: %s; checkpoint %s', step, cause, path)
    return 1


def _train_steps(args, plan, sess, graph, checkpoints, writer, stop, histograms, state):
    """_loop's iterations; keeps state['step'] (completed) and state['saved'] current."""
    step = state['step']
    window_start, window_step = time.time(), step
    values = {}
    scaled = 'overflow' in graph['fetches']
    overflows = consecutive = 0
    abandoned = ''
    bad = graph['bad_records']
    summary_fetches = dict(graph['fetches'])
    if histograms is not None:
        summary_fetches['gradients'] = histograms.fetches()
    while step < plan.last_step and stop.signum is None:
        # The step about to run writes summaries: fetch its gradients with it.
        summary_next = (step + 1) % args.summary_interval == 0
        values = sess.run(summary_fetches if summary_next else graph['fetches'],
                          stop.feed_dict())
        step = state['step'] = int(values['step'])
        stop.agree(values)
        if scaled and values['overflow']:
            # The loss-scale optimizer skipped this update (global_step did
            # not advance) and lowers the scale; a non-finite loss here is an
            # overflow too. Only a long run of them means a broken model.
            overflows += 1
            consecutive += 1
            logging.info('gradient overflow after step %d: update skipped (%d overflowed steps '
                         'skipped so far)', step, overflows)
            if consecutive >= args.max_consecutive_overflows:
                logging.error('%d consecutive gradient overflows (loss %s) after step %d: '
                              'stopping; no checkpoint written (the last good one is %s)',
                              consecutive, values['total_loss'], step,
                              checkpoint_utils.latest_in_folder(args.ckpt_path))
                return 1
            continue
        consecutive = 0
        if not np.isfinite(values['total_loss']):
            logging.error('non-finite loss (%s) at step %d: stopping; no checkpoint written '
                          '(the last good one is %s)', values['total_loss'], step,
                          checkpoint_utils.latest_in_folder(args.ckpt_path))
            return 1
        if step % args.show_info_interval == 0 or step == plan.last_step:
            now = time.time()
            speed = (step - window_step) * args.batch_size / max(now - window_start, 1e-9)
            window_start, window_step = now, step
            values['images_per_sec'] = speed
            # The original's line, then what it did not print.
            logging.info(TRAIN_LOG_LINE + ', lr %g%s%s', step // plan.steps_per_epoch, step,
                         values['total_loss'], values['inference_loss'], values['wd_loss'],
                         values['accuracy'], speed, values['lr'],
                         ', %d overflowed steps skipped' % overflows if scaled else '',
                         ', %d bad records skipped' % bad.count if bad.count else '')
        if step % args.summary_interval == 0:
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
        if step % args.ckpt_interval == 0:
            checkpoints.save(sess, step)
            state['saved'] = step
        if step % args.validate_interval == 0 or step == plan.last_step:
            try:
                _validate(sess, graph, plan, step, writer, checkpoints, stop)
            except _Interrupted:
                abandoned = ' (validation abandoned)'
            window_start, window_step = time.time(), step  # validation is not throughput
    if state['saved'] != step:
        checkpoints.save(sess, step)
        state['saved'] = step
    if stop.signum is not None:
        logging.info('stopped by signal %d at step %d%s%s', stop.signum, step, abandoned,
                     '; checkpoint %s' % checkpoints.latest if checkpoints.chief else '')
        return 128 + stop.signum
    return 0
