"""argparse pieces shared by every command-line tool of the project.

Flag types turn text into checked values (so a bad value is refused by the
parser, naming the flag); `OneLineParser` reports such errors as one line;
`fail` prints a one-line error for problems found after parsing.
"""
import argparse
import sys

from data import image_ops


class OneLineParser(argparse.ArgumentParser):
    """Reports flag errors as one line (no usage dump) and exits with status 2."""

    def error(self, message):
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
