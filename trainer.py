"""The training loop behind train_nets.py: graph, resume, logging, checkpoints, validation.

`prepare` checks every input (dataset, verification sets, flags against the
data) before any graph is built; `train` builds the graph and runs the loop.
Every iteration runs one fixed set of fetches, so a device that compiles one
graph per distinct sess.run (the NPU) compiles exactly two: the training step
and the validation embedding. Summaries are written from the fetched Python
values instead of a summary op for the same reason.

Checkpoints go through tf.train.Saver, which writes each file under a
temporary name and renames it, and updates the `checkpoint` index last and
atomically: a run killed at any moment resumes from the last complete one.
"""
import collections
import json
import logging
import os
import signal
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import face_model
import runtime
import verification
from data import eval_data_reader, input_pipeline
from data.manifest import ManifestError, load_manifest

CKPT_PREFIX = 'InsightFace_iter_%d.ckpt'  # the original's checkpoint names
BEST_SUBDIR = 'best'
BEST_INFO = 'best.json'

Plan = collections.namedtuple('Plan', [
    'manifest',         # the dataset manifest (data.manifest.load_manifest)
    'num_classes',
    'steps_per_epoch',
    'last_step',        # the global step training stops at
    'eval_sets',        # [(name, images uint8 [N,H,W,3], issame bool [N/2])]
    'device',
])


class SetupError(ValueError):
    """An input that makes training impossible; one-line message for the user."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf."""


def prepare(args):
    """Checks data and flags against each other before any work.

    Raises:
      SetupError: with a message naming the file or flag and what was expected.
    """
    try:
        manifest = load_manifest(args.tfrecords_file_path)
    except ManifestError as error:
        raise SetupError('%s (or run the demo: make demo)' % error)
    data_size = tuple(manifest['image_size'])
    if data_size != tuple(args.image_size):
        raise SetupError('--image_size %d,%d does not match the data in %s, which holds %d,%d '
                         'images' % (args.image_size + (args.tfrecords_file_path,) + data_size))
    num_classes = args.num_output or manifest['num_classes']
    if num_classes < manifest['num_classes']:
        raise SetupError('--num_output %d is smaller than the %d identities of %s'
                         % (num_classes, manifest['num_classes'], args.tfrecords_file_path))
    steps_per_epoch = manifest['num_images'] // args.batch_size
    if steps_per_epoch < 1:
        raise SetupError('--batch_size %d is larger than the %d images of %s'
                         % (args.batch_size, manifest['num_images'], args.tfrecords_file_path))
    last_step = steps_per_epoch * args.epoch
    if args.max_steps is not None:
        last_step = min(last_step, args.max_steps)
    eval_sets = []
    for name in args.eval_datasets:
        path = os.path.join(args.eval_db_path, name + '.bin')
        if not os.path.isfile(path):
            raise SetupError('verification set %s not found (--eval_db_path %s, '
                             '--eval_datasets %s)' % (path, args.eval_db_path, name))
        try:
            images, issame = eval_data_reader.load_bin(path, tuple(args.image_size))
        except ValueError as error:
            raise SetupError(str(error))
        eval_sets.append((name, images, np.asarray(issame, bool)))
    try:
        device = runtime.select_device(args.device)
    except ValueError as error:
        raise SetupError(str(error))
    return Plan(manifest, num_classes, steps_per_epoch, last_step, eval_sets, device)


def learning_rate(global_step, args):
    """The original's piecewise-constant schedule, boundaries scaled by 512/batch_size.

    Boundaries count iterations (this global_step advances once per step;
    the original's advanced twice, so it decayed at half these iterations).
    An optional linear warm-up scales the rate during the first iterations.
    """
    scale = 512.0 / args.batch_size
    boundaries = [int(round(step * scale)) for step in args.lr_steps]
    rate = tf.train.piecewise_constant(global_step, boundaries, list(args.lr_values))
    if args.warmup_steps:
        progress = tf.cast(global_step + 1, tf.float32) / float(args.warmup_steps)
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


class _StopRequest(object):
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signum = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, unused_frame):
        self.signum = signum


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
    """input_pipeline arguments of --augment: small shifts, crops and photometric jitter."""
    if not args.augment:
        return {}
    return {'max_translation': max(1, args.image_size[1] // 14), 'crop_scale': (0.9, 1.0),
            'brightness_delta': 0.1, 'contrast_range': (0.8, 1.2)}


def build_graph(args, plan):
    """The training and validation graphs; returns a dict of the tensors the loop uses."""
    if args.seed is not None:
        tf.set_random_seed(args.seed)
    global_step = tf.train.get_or_create_global_step()
    images, labels = input_pipeline.make_input(
        plan.manifest['shard_paths'], args.batch_size, tuple(args.image_size),
        buffer_size=args.buffer_size, seed=args.seed, **augmentation(args))
    losses = face_model.training_losses(
        images, labels, args.net_depth, plan.num_classes, args.loss_type, margin_args(args),
        args.weight_decay, args.keep_prob, runtime.dropout_fn(plan.device))
    lr = learning_rate(global_step, args)
    optimizer = tf.train.MomentumOptimizer(lr, args.momentum)
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.minimize(losses.total, global_step=global_step)
    eval_batch = args.eval_batch_size or args.batch_size
    eval_images, eval_embedding = face_model.inference_graph(
        args.net_depth, tuple(args.image_size), eval_batch, reuse=True)
    fetches = {'train': train_op, 'step': global_step, 'lr': lr, 'total_loss': losses.total,
               'inference_loss': losses.inference, 'wd_loss': losses.weight_decay,
               'accuracy': losses.accuracy}
    return {'fetches': fetches, 'global_step': global_step, 'eval_images': eval_images,
            'eval_embedding': eval_embedding, 'eval_batch': eval_batch}


class _Checkpoints(object):
    """Periodic checkpoints, the best-accuracy checkpoint, and resume."""

    def __init__(self, ckpt_dir, max_to_keep):
        self.dir = ckpt_dir
        self.best_dir = os.path.join(ckpt_dir, BEST_SUBDIR)
        for path in (self.dir, self.best_dir):
            if not os.path.isdir(path):
                os.makedirs(path)
        self.saver = tf.train.Saver(max_to_keep=max_to_keep)
        self.best_saver = tf.train.Saver(max_to_keep=1)
        self.best = self._read_best()

    def _read_best(self):
        path = os.path.join(self.best_dir, BEST_INFO)
        if os.path.isfile(path):
            with open(path) as info:
                return json.load(info)
        return {'accuracy': -1.0}

    def restore_or_init(self, sess):
        latest = tf.train.latest_checkpoint(self.dir)
        if latest:
            self.saver.restore(sess, latest)
            logging.info('resumed from %s', latest)
        else:
            sess.run(tf.global_variables_initializer())
        return latest

    def save(self, sess, step):
        path = self.saver.save(sess, os.path.join(self.dir, CKPT_PREFIX % step),
                               write_meta_graph=False)
        logging.info('checkpoint %s', path)
        return path

    def offer_best(self, sess, step, accuracy, dataset):
        if accuracy <= self.best['accuracy']:
            return
        path = self.best_saver.save(sess, os.path.join(self.best_dir, CKPT_PREFIX % step),
                                    write_meta_graph=False)
        self.best = {'accuracy': accuracy, 'step': step, 'dataset': dataset, 'checkpoint': path}
        temp = os.path.join(self.best_dir, BEST_INFO + '.tmp')
        with open(temp, 'w') as info:
            json.dump(self.best, info, indent=2)
        os.rename(temp, os.path.join(self.best_dir, BEST_INFO))
        logging.info('best %s accuracy so far: %.5f at step %d -> %s', dataset, accuracy, step, path)


def _summary(writer, step, values):
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=float(v))
                                         for k, v in sorted(values.items())]), step)


def _validate(sess, graph, plan, step, writer, checkpoints):
    accuracies = []
    for name, images, issame in plan.eval_sets:
        result = verification.run_verification(sess, graph['eval_images'], graph['eval_embedding'],
                                               images, issame, graph['eval_batch'])
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
    log_path = _setup_logging(args.log_file_path)
    _record_run(args, args.log_file_path, plan)
    logging.info('device %s, %d images of %d identities, %d steps per epoch, stopping at step %d',
                 plan.device, plan.manifest['num_images'], plan.num_classes, plan.steps_per_epoch,
                 plan.last_step)
    with tf.Graph().as_default():
        graph = build_graph(args, plan)
        checkpoints = _Checkpoints(args.ckpt_path, args.saver_maxkeep)
        writer = tf.summary.FileWriter(args.summary_path)
        config = runtime.session_config(plan.device, args.precision_mode,
                                        log_device_placement=args.log_device_mapping,
                                        num_threads=args.num_threads)
        stop = _StopRequest()
        with tf.Session(config=config) as sess:
            if not checkpoints.restore_or_init(sess):
                writer.add_graph(sess.graph)
            code = _loop(args, plan, sess, graph, checkpoints, writer, stop)
        writer.close()
    logging.info('checkpoints: %s', os.path.abspath(args.ckpt_path))
    logging.info('logs: %s', os.path.abspath(log_path))
    logging.info('TensorBoard: tensorboard --logdir %s', os.path.abspath(args.summary_path))
    return code


def _loop(args, plan, sess, graph, checkpoints, writer, stop):
    step = int(sess.run(graph['global_step']))
    if step >= plan.last_step:
        logging.info('global step %d already reached the last step %d; nothing to do',
                     step, plan.last_step)
        return 0
    last_saved = step
    window_start, window_step = time.time(), step
    values = {}
    while step < plan.last_step and stop.signum is None:
        values = sess.run(graph['fetches'])
        step = int(values['step'])
        if not np.isfinite(values['total_loss']):
            logging.error('non-finite loss (%s) at step %d: stopping; no checkpoint written '
                          '(the last good one is %s)', values['total_loss'], step,
                          tf.train.latest_checkpoint(args.ckpt_path))
            return 1
        if step % args.show_info_interval == 0 or step == plan.last_step:
            now = time.time()
            speed = (step - window_step) * args.batch_size / max(now - window_start, 1e-9)
            window_start, window_step = now, step
            values['images_per_sec'] = speed
            logging.info('epoch %d, step %d, total loss %.3f, inference loss %.3f, weight decay '
                         'loss %.3f, training accuracy %.4f, lr %g, %.1f images/s',
                         step // plan.steps_per_epoch, step, values['total_loss'],
                         values['inference_loss'], values['wd_loss'], values['accuracy'],
                         values['lr'], speed)
        if step % args.summary_interval == 0:
            _summary(writer, step, {k: values[k] for k in ('total_loss', 'inference_loss',
                                                           'wd_loss', 'accuracy', 'lr')})
        if step % args.ckpt_interval == 0:
            checkpoints.save(sess, step)
            last_saved = step
        if step % args.validate_interval == 0 or step == plan.last_step:
            _validate(sess, graph, plan, step, writer, checkpoints)
            window_start, window_step = time.time(), step  # validation is not throughput
    if last_saved != step:
        checkpoints.save(sess, step)
    if stop.signum is not None:
        logging.info('stopped by signal %d at step %d after saving a checkpoint', stop.signum, step)
        return 128 + stop.signum
    return 0
