"""The flags of the training, evaluation and export tools: types that refuse bad values
in the parser, naming the flag, and the network flags they share.

The generic pieces (the one-line parser, `fail`, booleans, positive integers,
output folders) are data.cli's, imported here so that a tool needs one module.
"""
import argparse
import math

import tensorflow.compat.v1 as tf

from data.cli import (OneLineParser, UsageError, check_output_folder, fail,  # noqa: F401
                      image_size, non_negative_int, positive_int, str2bool)
from data.image_files import ImageFolderError
from data.safe_files import OutputError
from nets.checkpoint_names import CheckpointError, RestoreError, op_error_text

# What the user gave is wrong (a flag, a file, a checkpoint): one line, exit status 2.
INPUT_ERRORS = (UsageError, CheckpointError, OutputError, ImageFolderError)


def add_checkpoint_network(group, images_are):
    """--net_depth (read from the checkpoint when absent), --image_size, --net_input_size:
    the network flags of every tool that loads a checkpoint (evaluate, export, embed).

    Args:
      group: a parser or argument group.
      images_are: what --image_size is the size of, for its help.
    """
    from nets.L_Resnet_E_IR import NORMS, all_depths
    group.add_argument('--net_depth', type=int, default=None, choices=all_depths(),
                       help='L_Resnet_E_IR depth of the checkpoint, checked against it; '
                            'None: the depth it holds (the width is always read from the '
                            'checkpoint)')
    group.add_argument('--norm', default=None, choices=list(NORMS),
                       help='normalisation of the checkpoint\'s network, checked against it; '
                            'None: the one it holds (read from its variable names)')
    group.add_argument('--image_size', type=image_size, default=(112, 112),
                       help='height,width of %s (the network\'s too, unless '
                            '--net_input_size)' % images_are)
    add_net_input_size(group)


def checkpoint_arguments(ckpt_file, ckpt_index_list):
    """The checkpoints an evaluation tool resolves: --ckpt_file alone, or --ckpt_file with
    each --ckpt_index_list entry appended (the original's way of naming several)."""
    if ckpt_index_list:
        return [ckpt_file + entry for entry in ckpt_index_list]
    return [ckpt_file]


def add_net_input_size(group):
    """--net_input_size, the same for training, evaluation and export."""
    group.add_argument('--net_input_size', type=image_size, default=None,
                       help='height,width the network runs at: images of --image_size are '
                            'shrunk to it by area averaging (training batches and '
                            'verification sets alike), e.g. 56,56 for 4x faster steps on small '
                            'data; a checkpoint must be evaluated and exported with the value '
                            'it was trained with (this project\'s checkpoint folders record it '
                            'in network.json, which tools read); default: --image_size')


def check_net_input_size(net_input_size, image_size):
    """A problem message if --net_input_size exceeds --image_size, else None."""
    if net_input_size is None:
        return None
    if net_input_size[0] > image_size[0] or net_input_size[1] > image_size[1]:
        return ('--net_input_size %d,%d: expected at most --image_size %d,%d (images are '
                'only shrunk)' % (tuple(net_input_size) + tuple(image_size)))
    return None


def int_list(text):
    """'40000,60000' -> [40000, 60000] (empty string -> [])."""
    try:
        return [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated integers, got %r' % (text,))


def float_list(text):
    """'0.1,0.01' -> [0.1, 0.01]."""
    try:
        return [float(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated numbers, got %r' % (text,))


def loss_scale(text):
    """'dynamic' or a fixed scale >= 1 (the NPU's FixedLossScaleManager refuses less)."""
    if text == 'dynamic':
        return text
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (math.isfinite(value) and value >= 1.0):
        raise argparse.ArgumentTypeError("expected 'dynamic' or a number >= 1, got %r" % (text,))
    return value


def _bound_text(value):
    return 'pi' if value == math.pi else '%g' % value


def bounded_float(low, high=None, low_open=False, high_open=True):
    """An argparse type: a finite number between low and high (None: no upper bound).

    bounded_float(0.0, 1.0) accepts [0, 1); its error names the interval,
    e.g. "expected a number in [0, 1), got '-0.9'". NaN and infinities are
    refused: no hyper-parameter of this project means anything at either.
    """
    interval = '%s%s, %s%s' % ('(' if low_open else '[', _bound_text(low),
                               'inf' if high is None else _bound_text(high),
                               ')' if high_open or high is None else ']')

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float('nan')
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError('expected a number in %s, got %r'
                                             % (interval, text))
        return value
    return parse


def learning_rates(text):
    """'0.1,0.01,0' -> [0.1, 0.01, 0.0]: finite, >= 0, at least one of them positive.

    A rate of 0 is accepted in some phases: it freezes the weights exactly
    (Momentum's update is the rate times the velocity) while batch-norm
    statistics and validation go on, e.g. a last phase that only recalibrates
    them. A negative rate climbs the loss, and all rates 0 train nothing.
    """
    values = float_list(text)
    if not all(math.isfinite(v) and v >= 0.0 for v in values):
        raise argparse.ArgumentTypeError('expected comma-separated learning rates >= 0, got %r'
                                         % (text,))
    if values and not any(values):
        raise argparse.ArgumentTypeError('every learning rate is 0, so nothing would train; '
                                         'expected at least one positive, got %r' % (text,))
    return values


def combine_margins(text):
    """'1,0.3,0.2' -> [1.0, 0.3, 0.2]: m1,m2,m3 of the combined margin that penalise
    the target class (losses.face_losses.combined_margin_problem)."""
    from losses import face_losses
    values = float_list(text)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError('expected three numbers m1,m2,m3, got %r' % (text,))
    if not values[0] > 0.0:
        raise argparse.ArgumentTypeError('expected m1 > 0 (the target logit must depend on '
                                         'the angle), got %r' % (text,))
    problem = face_losses.combined_margin_problem(*values)
    if problem:
        raise argparse.ArgumentTypeError('%s %s' % (text, problem))
    return values


def run_tool(prog, work, failing, writing, input_errors=()):
    """Runs a tool's work and turns the errors every tool meets into one line and a status.

    Args:
      prog: the tool's name, which starts every error line.
      work: fn() -> None (done) or an exit status.
      failing: what was running, for a TensorFlow error ('evaluation' -> 'evaluation
        failed: ...').
      writing: what could not be written, for an IOError/OSError.
      input_errors: more exception types that mean a bad input (status 2).
    Returns:
      work()'s status (0 for None); 2 after one line for INPUT_ERRORS and input_errors;
      1 after one line for a checkpoint that cannot be read, a TensorFlow error while
      running, or an output that cannot be written.
    """
    try:
        return work() or 0
    except INPUT_ERRORS + tuple(input_errors) as error:
        return fail(prog, error, 2)
    except RestoreError as error:
        return fail(prog, error, 1)
    except tf.errors.OpError as error:
        return fail(prog, '%s failed: %s (%s)' % (failing, op_error_text(error),
                                                 type(error).__name__), 1)
    except (IOError, OSError) as error:
        return fail(prog, 'cannot write %s: %s' % (writing, error), 1)
