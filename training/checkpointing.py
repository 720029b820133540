"""Checkpoints of a training run: periodic ones, the best-accuracy one, and resume.

Checkpoints go through tf.train.Saver, which writes each file under a
temporary name and renames it, and updates the `checkpoint` index last and
atomically: a run killed at any moment resumes from the last complete one.
The `checkpoint` index holds relative names, so a copied folder resumes from
its own files.

A margin head sharded over several processes (Partial FC over HCCL ranks or
gRPC workers) is saved without assembling it anywhere: each process writes
its own blocks as a part (`<checkpoint>.part-<rank>`) into the shared
--ckpt_path, the chief writes the rest as part 0, and once every part is
there merges them into one checkpoint (MergeV2Checkpoints: the data files are
renamed, not copied) and only then records it as the latest.
"""
import glob
import json
import logging
import os
import shutil
import threading
import time

import tensorflow.compat.v1 as tf
from tensorflow.python.training import checkpoint_management

from data.safe_files import write_atomically
from nets import checkpoint_names
from training import checkpoint_utils

CKPT_PREFIX = 'InsightFace_iter_%d.ckpt'  # the original's checkpoint names
BEST_SUBDIR = 'best'
BEST_INFO = 'best.json'
ACCURACY = 'accuracy'  # the .bin sets' metric; IJB's is e.g. 'TAR@FAR=1e-4'


PART_SUFFIX = '.part-%d'  # one process's share of a checkpoint, until the chief merges it


class Checkpoints(object):
    """Periodic checkpoints, the best-accuracy checkpoint, and resume.

    Every worker restores; only the chief (rank 0) writes, but for the blocks of
    a head sharded over the processes (`own_variables`), which each writes.
    """

    def __init__(self, ckpt_dir, max_to_keep, chief=True, own_variables=(), rank=0,
                 world_size=1, part_wait_seconds=300):
        """own_variables: the variables this process alone holds (a head sharded over the
        processes); part_wait_seconds: how long the chief waits for the others' parts."""
        self.dir = ckpt_dir
        self.best_dir = os.path.join(ckpt_dir, BEST_SUBDIR)
        self.chief = chief
        self.rank = rank
        self.num_parts = world_size if own_variables else 1
        self.part_wait_seconds = part_wait_seconds
        for path in (self.dir, self.best_dir):
            if chief and not os.path.isdir(path):
                os.makedirs(path)
        if chief and self.num_parts > 1:
            # Parts of a save that never completed: no process writes one before the
            # chief has started (the first step needs it), so none of these is current.
            _remove_files(glob.glob(os.path.join(self.dir, '*.part-[0-9]*')))
        # Relative names in the `checkpoint` index: a copied folder resumes from its own files.
        self.saver = tf.train.Saver(max_to_keep=max_to_keep, save_relative_paths=True)
        self.part_saver = None
        if own_variables and not chief:
            self.part_saver = tf.train.Saver(list(own_variables), save_relative_paths=True)
        own = {var.op.name for var in own_variables}
        # The best checkpoint is for evaluation: with a head spread over processes, the
        # network and the optimizer's state without this process's blocks.
        self.best_saver = tf.train.Saver(
            [var for var in tf.global_variables() if var.op.name not in own] if own else None,
            max_to_keep=1, save_relative_paths=True)
        self.best = self._read_best()
        self.latest = checkpoint_names.latest_in_folder(self.dir)
        self.restore_plan = None
        # Held while a checkpoint is written: a process ended from another thread
        # (trainer's lost-peer stop) lets the save finish first.
        self.saving = threading.Lock()
        if self.latest:
            self.restore_plan = checkpoint_utils.plan_training_restore(
                self.latest, tf.global_variables())

    @property
    def writes(self):
        """True on the chief, and on a process that writes its part of each checkpoint."""
        return self.chief or self.part_saver is not None

    def _read_best(self):
        path = os.path.join(self.best_dir, BEST_INFO)
        if os.path.isfile(path):
            with open(path) as info:
                return json.load(info)
        return {}

    def restore_or_init(self, sess):
        """Restores the latest checkpoint, or initialises; returns the checkpoint or None."""
        if not self.latest:
            sess.run(tf.global_variables_initializer())
            return None
        converted = checkpoint_utils.apply_training_restore(sess, self.restore_plan)
        logging.info('resumed from %s', self.latest)
        for graph_name, stored in self.restore_plan.aliased:
            logging.info('  %s read from %s', graph_name, stored)
        for graph_name, pieces in self.restore_plan.resharded:
            logging.info('  %s re-sharded from %s', graph_name, ', '.join(pieces))
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
        if not self.chief and self.part_saver is None:
            return None
        prefix = os.path.join(self.dir, CKPT_PREFIX % step)
        try:
            with self.saving:
                if not self.chief:  # this process's blocks, for the chief to merge
                    self.part_saver.save(sess, prefix + PART_SUFFIX % self.rank,
                                         write_meta_graph=False, write_state=False)
                    return None
                if self.num_parts == 1:
                    path = self.saver.save(sess, prefix, write_meta_graph=False)
                else:
                    path = self._save_merged(sess, prefix)
        except (tf.errors.OpError, OSError, ValueError, PartMissing) as error:
            # Files of an unfinished save are referenced by no index: remove them so
            # that a full disk gets its space back (best effort: it may be read-only).
            _remove_files(glob.glob(prefix + '.*') + glob.glob(prefix + '_temp*'))
            raise CheckpointWriteError(prefix, error)
        self.latest = path
        logging.info('checkpoint %s', path)
        return path

    def _save_merged(self, sess, prefix):
        """The chief's save of a head spread over the processes: its part, then every
        part merged into `prefix`, which then becomes the latest checkpoint."""
        parts = [prefix + PART_SUFFIX % rank for rank in range(self.num_parts)]
        self.saver.save(sess, parts[0], write_meta_graph=False, write_state=False)
        deadline = time.time() + self.part_wait_seconds
        for rank, part in enumerate(parts[1:], 1):
            while not os.path.isfile(part + '.index'):  # a part's index is written last
                if time.time() > deadline:
                    raise PartMissing(
                        'rank %d\'s blocks (%s) did not appear within %d s: that rank '
                        'stopped or was lost, or does not write into this --ckpt_path (with '
                        '--partial_fc over several processes every rank writes its blocks '
                        'into one folder all of them share)'
                        % (rank, os.path.basename(part), self.part_wait_seconds))
                time.sleep(0.2)
        with tf.Graph().as_default(), tf.Session(config=tf.ConfigProto(
                device_count={'GPU': 0})) as merging:
            merging.run(tf.raw_ops.MergeV2Checkpoints(
                checkpoint_prefixes=parts, destination_prefix=prefix, delete_old_dirs=False))
        # What Saver.save does after writing (it did not know of the other parts): the
        # `checkpoint` index, then the removal of checkpoints beyond --saver_maxkeep.
        saver = self.saver
        saver._RecordLastCheckpoint(prefix)  # pylint: disable=protected-access
        checkpoint_management.update_checkpoint_state_internal(
            save_dir=self.dir, model_checkpoint_path=prefix,
            all_model_checkpoint_paths=saver.last_checkpoints, save_relative_paths=True)
        saver._MaybeDeleteOldCheckpoints()  # pylint: disable=protected-access
        return prefix

    def offer_best(self, sess, step, value, dataset, metric=ACCURACY):
        """Saves the step's weights to best/ if `value` (higher is better) of `metric`
        on `dataset` beats the best so far. A best chosen on another set or metric (a
        run resumed with another --best_metric) is replaced by the first offer."""
        if not self.chief:
            return
        kept = (self.best.get('dataset'), self.best.get('metric', ACCURACY))
        if kept[0] is not None and kept != (dataset, metric):
            logging.info('the best checkpoint so far was chosen on %s %s (%.5f at step %d); '
                         'from now on %s %s chooses it', kept[0], kept[1], _best_value(self.best),
                         self.best['step'], dataset, metric)
            self.best = {}
        if self.best and value <= _best_value(self.best):
            return
        path = self.best_saver.save(sess, os.path.join(self.best_dir, CKPT_PREFIX % step),
                                    write_meta_graph=False)
        self.best = {'dataset': dataset, 'metric': metric, 'value': value, 'step': step,
                     'checkpoint': path}
        if metric == ACCURACY:
            self.best['accuracy'] = value  # the key best.json had before --best_metric
        write_atomically(os.path.join(self.best_dir, BEST_INFO),
                         json.dumps(self.best, indent=2, sort_keys=True).encode('utf-8'))
        logging.info('best %s %s so far: %.5f at step %d -> %s', dataset, metric, value, step,
                     path)


def _best_value(best):
    """The score of a best.json record (one written before 'value' existed: 'accuracy')."""
    return best['value'] if 'value' in best else best['accuracy']


def _remove_files(paths):
    """Removes files and folders, best effort (the folder may be read-only)."""
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass


class PartMissing(Exception):
    """Another process's part of a checkpoint did not appear in time."""


class CheckpointWriteError(Exception):
    """A checkpoint could not be written; str() is one line with the cause."""

    def __init__(self, prefix, error):
        super(CheckpointWriteError, self).__init__(
            'cannot write checkpoint %s (%s)' % (prefix, cause_line(error, short=True)))


def cause_line(error, short=False):
    """One line for an exception: checkpoint_names.op_error_text, with the type of a
    TensorFlow error in front ('DataLossError: ...'); short: only the last '; ' part
    instead, the operating system's reason for a file error ('Permission denied', 'No
    space left on device'), not the temporary file's name.
    """
    line = checkpoint_names.op_error_text(error)
    if short and '; ' in line:
        return line.rsplit('; ', 1)[1]
    if isinstance(error, tf.errors.OpError):
        return '%s: %s' % (type(error).__name__, line)
    return line
