"""argparse pieces shared by every command-line tool of the project.

Flag types turn text into checked values (so a bad value is refused by the
parser, naming the flag); `OneLineParser` reports such errors as one line;
`fail` prints a one-line error for problems found after parsing;
`output_folder_problem` finds an output folder that cannot be written before
any work is done.
"""
import argparse
import math
import os
import sys
import tempfile

from data import image_ops


class OneLineParser(argparse.ArgumentParser):
    """Reports flag errors as one line (no usage dump) and exits with status 2."""

    def error(self, message):
        if message.endswith('expected one argument'):
            # argparse takes a value such as '-0.01,0.1' or '-5e-4' for an option.
            message += " (a value starting with '-' goes after '=', e.g. --flag=-1e-4)"
        self.exit(2, '%s: error: %s\n' % (self.prog, message))


def fail(prog, message, code):
    """Writes '<prog>: error: <message>' to stderr; returns `code` for main() to return."""
    sys.stderr.write('%s: error: %s\n' % (prog, message))
    return code


def image_size(text):
    """'112,112' -> (112, 112)."""
    try:
        return image_ops.parse_image_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def add_checkpoint_network(group, images_are):
    """--net_depth (read from the checkpoint when absent), --image_size, --net_input_size:
    the network flags of every tool that loads a checkpoint (evaluate, export, embed).

    Args:
      group: a parser or argument group.
      images_are: what --image_size is the size of, for its help.
    """
    from nets.L_Resnet_E_IR import all_depths
    group.add_argument('--net_depth', type=int, default=None, choices=all_depths(),
                       help='L_Resnet_E_IR depth of the checkpoint, checked against it; '
                            'None: the depth it holds (the width variant is always read '
                            'from the checkpoint)')
    group.add_argument('--image_size', type=image_size, default=(112, 112),
                       help='height,width of %s (the network\'s too, unless '
                            '--net_input_size)' % images_are)
    add_net_input_size(group)


def add_net_input_size(group):
    """--net_input_size, the same for training, evaluation and export."""
    group.add_argument('--net_input_size', type=image_size, default=None,
                       help='height,width the network runs at: images of --image_size are '
                            'shrunk to it by area averaging (training batches and '
                            'verification sets alike), e.g. 56,56 for 4x faster steps on small '
                            'data; a checkpoint must be evaluated and exported with the value '
                            'it was trained with; default: --image_size')


def check_net_input_size(net_input_size, image_size):
    """A problem message if --net_input_size exceeds --image_size, else None."""
    if net_input_size is None:
        return None
    if net_input_size[0] > image_size[0] or net_input_size[1] > image_size[1]:
        return ('--net_input_size %d,%d: expected at most --image_size %d,%d (images are '
                'only shrunk)' % (tuple(net_input_size) + tuple(image_size)))
    return None


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % (text,))
    return value


def str2bool(text):
    """True/False flags ('True', 'false', '1', 'no', ...), as the original's string flags."""
    value = str(text).strip().lower()
    if value in ('true', '1', 'yes', 'y'):
        return True
    if value in ('false', '0', 'no', 'n'):
        return False
    raise argparse.ArgumentTypeError('expected True or False, got %r' % (text,))


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
    """'dynamic' or a positive number."""
    if text == 'dynamic':
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0.0:
        raise argparse.ArgumentTypeError("expected 'dynamic' or a positive number, got %r"
                                         % (text,))
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


def output_folder_problem(path, flag):
    """Creates the output folder `path` if needed and checks that files can be written in it.

    A folder that cannot be written would otherwise be found at the first
    checkpoint, log line or result, after the work it was meant to keep. The
    check writes and removes an empty file, the only test that also holds for
    root, read-only mounts and network file systems.

    Returns:
      None, or a one-line problem naming `flag`.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        return '%s %s is a file; expected a folder' % (flag, path)
    if not os.path.isdir(path):
        try:
            os.makedirs(path)
        except OSError as error:
            return '%s %s: cannot create the folder (%s)' % (flag, path, error.strerror or error)
    try:
        handle, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        return '%s %s: cannot write in the folder (%s)' % (flag, path, error.strerror or error)
    return None
