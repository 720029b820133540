"""TensorFlow's own log noise, silenced before TensorFlow is imported: the one place.

Every command-line tool imports this module first, before anything that imports
TensorFlow, so that what a tool prints is the project's own lines: not
TensorFlow's C++ banners (CPU features, oneDNN, XLA, absl's "All log messages
before absl::InitializeLog()"), nor its Python deprecation warnings
("disable_resource_variables ... is deprecated", with a file path).

  * C++ logs: TF_CPP_MIN_LOG_LEVEL=2 (errors only), which TensorFlow reads once,
    when it is imported. A value the user set is left alone. What TensorFlow 2.21
    prints at import regardless (absl's banner, oneDNN's notice) is kept off stderr
    by importing it here with stderr pointed at /dev/null.
  * Python logs: the 'tensorflow' and 'absl' loggers (deprecations, tf2onnx's
    and Keras's chatter) show errors only. Set before the import: TensorFlow
    configures its logger's handler, not its level.

`--verbose` on any tool's command line brings all of it back (TF_CPP_MIN_LOG_LEVEL
as the user has it, or TensorFlow's own default). Warnings about the user's run
are the project's own log lines and are never silenced.
"""
import logging
import os
import sys

VERBOSE_FLAG = '--verbose'
VERBOSE = VERBOSE_FLAG in sys.argv[1:]
QUIET_LOGGERS = ('tensorflow', 'absl')



def _import_tensorflow_without_its_banner():
    """Imports TensorFlow with the process's stderr pointed at /dev/null.

    TensorFlow 2.21 logs through absl before absl is initialised, which no environment
    variable silences: where oneDNN is on by default (CPUs with AVX-512 VNNI/BF16 or AMX)
    its import prints "oneDNN custom operations are on" behind absl's "All log messages
    before absl::InitializeLog()". Nothing else is written during the import; a failing
    import is left to the tool's own import, which then shows its error.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if not VERBOSE:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    for _name in QUIET_LOGGERS:
        logging.getLogger(_name).setLevel(logging.ERROR)
    _import_tensorflow_without_its_banner()


def add_flag(parser):
    """Adds --verbose (read above from sys.argv, before the parser runs) to a tool's parser."""
    parser.add_argument(VERBOSE_FLAG, action='store_true',
                        help='also print TensorFlow\'s own log messages (C++ banners, '
                             'deprecation warnings), which the tools silence by default')
