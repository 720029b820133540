"""TensorFlow's own log noise, silenced before TensorFlow is imported: the one place.

Every command-line tool imports this module first, before anything that imports
TensorFlow, so that what a tool prints is the project's own lines: not
TensorFlow's C++ banners (CPU features, oneDNN, XLA, absl's "All log messages
before absl::InitializeLog()"), nor its Python deprecation warnings
("disable_resource_variables ... is deprecated", with a file path).

  * C++ logs: TF_CPP_MIN_LOG_LEVEL=2 (errors only), which TensorFlow reads once,
    when it is imported. A value the user set is left alone. What TensorFlow 2.21
    prints at import regardless (absl's banner, oneDNN's notice) is kept off stderr:
    its import runs with stderr pointed at /dev/null.
  * Python logs: the 'tensorflow' and 'absl' loggers (deprecations, tf2onnx's
    and Keras's chatter) show errors only. Set before the import: TensorFlow
    configures its logger's handler, not its level.

`--verbose` on any tool's command line brings all of it back (TF_CPP_MIN_LOG_LEVEL
as the user has it, or TensorFlow's own default). Warnings about the user's run
are the project's own log lines and are never silenced.
"""
import importlib.machinery
import logging
import os
import sys

VERBOSE_FLAG = '--verbose'
VERBOSE = VERBOSE_FLAG in sys.argv[1:]
QUIET_LOGGERS = ('tensorflow', 'absl')


class _StderrSilencedDuringImport(object):
    """Runs TensorFlow's first import with the process's stderr pointed at /dev/null.

    TensorFlow 2.21 logs through absl before absl is initialised, which no environment
    variable silences: where oneDNN is on by default (CPUs with AVX-512 VNNI/BF16 or AMX)
    its import prints "oneDNN custom operations are on" behind absl's "All log messages
    before absl::InitializeLog()". A finder on sys.meta_path wraps the loader of the
    `tensorflow` package only, so tools that never import TensorFlow (or import it late,
    after forking workers) are not made to import it here. An import that fails still
    raises its Python error.
    """

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, 'w') as null:
                os.dup2(null.fileno(), 2)
                self._loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _TensorFlowFinder(object):
    def find_spec(self, name, path=None, target=None):
        if name != 'tensorflow':
            return None
        sys.meta_path.remove(self)  # once, and out of the way of the real search
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _StderrSilencedDuringImport(spec.loader)
        return spec


if not VERBOSE:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    for _name in QUIET_LOGGERS:
        logging.getLogger(_name).setLevel(logging.ERROR)
    if 'tensorflow' not in sys.modules:
        sys.meta_path.insert(0, _TensorFlowFinder())


def add_flag(parser):
    """Adds --verbose (read above from sys.argv, before the parser runs) to a tool's parser."""
    parser.add_argument(VERBOSE_FLAG, action='store_true',
                        help='also print TensorFlow\'s own log messages (C++ banners, '
                             'deprecation warnings), which the tools silence by default')
