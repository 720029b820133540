"""Lets a tool in data/ run as a file, `python3 data/mx2tfrecords.py`, the original's
command, as well as `python3 -m data.mx2tfrecords`, without editing sys.path.

Run as a file, Python puts data/ (not the project root) on the path, so `from data import
...` cannot work. The tool's first lines then call rerun_as_module, which replaces the
process with `python3 -m data.<tool>`, the project root added to PYTHONPATH for that process
only. Imported here by its plain name (data/ is on the path in exactly that case).
"""
import os
import sys


def rerun_as_module(tool_file):
    """Replaces this process with `python -m <package>.<tool>` and the same arguments."""
    folder, name = os.path.split(os.path.abspath(tool_file))
    root = os.path.dirname(folder)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([root] + ([env['PYTHONPATH']]
                                                  if env.get('PYTHONPATH') else []))
    module = '%s.%s' % (os.path.basename(folder), os.path.splitext(name)[0])
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, '-m', module] + sys.argv[1:], env)
