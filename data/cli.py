"""argparse pieces every command-line tool of the project uses, the data tools included.

Flag types turn text into checked values (so a bad value is refused by the
parser, naming the flag); `OneLineParser` reports such errors as one line;
`fail` prints a one-line error for problems found after parsing;
`check_output_folder` finds an output folder that cannot be written before
any work is done. The training tools' own flag types are in training.cli_flags.
"""
import argparse
import os
import sys
import tempfile


class UsageError(ValueError):
    """An input that makes a tool's work impossible; the message is one line for the user."""


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
    # Imported here: image_ops imports TensorFlow (seconds), which a converter refusing
    # its flags or its output folder should not wait for.
    from data import image_ops
    try:
        return image_ops.parse_image_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % (text,))
    return value


def non_negative_int(text):
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError('expected an integer >= 0, got %r' % (text,))
    return value


def str2bool(text):
    """True/False flags ('True', 'false', '1', 'no', ...), as the original's string flags."""
    value = str(text).strip().lower()
    if value in ('true', '1', 'yes', 'y'):
        return True
    if value in ('false', '0', 'no', 'n'):
        return False
    raise argparse.ArgumentTypeError('expected True or False, got %r' % (text,))


def check_output_folder(path, flag):
    """Creates the output folder `path` if needed and checks that files can be written in it.

    A folder that cannot be written would otherwise be found at the first
    checkpoint, log line or result, after the work it was meant to keep. The
    check writes and removes an empty file, the only test that also holds for
    root, read-only mounts and network file systems.

    Raises:
      UsageError: one line naming `flag`.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError('%s %s is a file; expected a folder' % (flag, path))
    if not os.path.isdir(path):
        try:
            os.makedirs(path)
        except OSError as error:
            raise UsageError('%s %s: cannot create the folder (%s)'
                             % (flag, path, error.strerror or error))
    try:
        handle, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise UsageError('%s %s: cannot write in the folder (%s)'
                         % (flag, path, error.strerror or error))
