"""Files written so that a reader never sees half of one.

Typical use:
    write_atomically('output/eval.json', text.encode('utf-8'))
"""
import os
import tempfile


def write_atomically(path, data):
    """Writes bytes to a temporary file beside `path`, then renames it into place.

    A reader never sees a half-written file, and an interrupted write leaves
    the old file (if any) as it was; the mode follows the umask as for a
    plain open().
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix='.' + os.path.basename(path), suffix='.tmp',
                                    dir=folder)
    try:
        with os.fdopen(handle, 'wb') as out:
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
