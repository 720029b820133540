"""Files written so that a reader never sees half of one, and replaced only by their writer.

Replacing is limited to what a tool recorded writing: `--overwrite` must never
delete a user's file that happens to sit where an output goes. Folders of
outputs (TFRecord shards, a synthetic dataset) are recorded by their own
manifest (data/shard_writer.py, data/make_synthetic_dataset.py); single
outputs (a .bin, an .npz, an export's frozen graph or SavedModel) by a hidden
record beside them, `.<name>.written.json`, with each file's size and SHA-256.

Typical use:
    write_atomically('output/eval.json', text.encode('utf-8'))
    check_output('datasets/my_val.bin', 'make_pairs.py', '--output', overwrite)
    ...                                                  # the long work
    write_recorded('datasets/my_val.bin', data, 'make_pairs.py', '--output', overwrite)
"""
import hashlib
import json
import os
import tempfile

_HASH_CHUNK = 1 << 20


class OutputError(ValueError):
    """An output that may not be written or replaced; the message is one line."""


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


def _listing(names, limit=3):
    """'a, b, c and 4 more'."""
    shown = ', '.join(names[:limit])
    return shown + (' and %d more' % (len(names) - limit) if len(names) > limit else '')


def check_holds_only(folder, recorded, flag, writer):
    """Refuses a folder that holds anything but `recorded` names (an empty one passes).

    Args:
      folder: an existing folder.
      recorded: names the writer recorded writing there.
      flag, writer: for the message, e.g. '--tfrecords_file_path', 'no conversion'.
    Raises:
      OutputError: naming the first few names that are not recorded.
    """
    foreign = sorted(set(os.listdir(folder)) - set(recorded))
    if foreign:
        raise OutputError('%s %s holds %s, which %s; give a new or empty folder'
                          % (flag, folder, _listing(foreign), writer))


def remove_recorded(folder, names):
    """Deletes the named entries of `folder`, then the folder if that emptied it.

    Anything else stays where it is (and so does the folder).
    """
    for name in names:
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            os.remove(path)
    if not os.listdir(folder):
        os.rmdir(folder)


def record_path(path):
    """The hidden record of what a tool wrote at `path`: `.<name>.written.json` beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, '.%s.written.json' % name)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as data:
        for chunk in iter(lambda: data.read(_HASH_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _contents(path):
    """{relative name: [size, sha256]} of a file ('.') or of everything under a folder.

    Folders are entries too ('folder'), and so are symbolic links ('link'),
    which no tool writes: a link or empty folder added later is a difference.
    """
    if not os.path.isdir(path) or os.path.islink(path):
        return {'.': 'link' if os.path.islink(path) else [os.path.getsize(path), _sha256(path)]}
    contents = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            relative = os.path.relpath(full, path)
            if os.path.islink(full):
                contents[relative] = 'link'
            elif os.path.isdir(full):
                contents[relative] = 'folder'
            else:
                contents[relative] = [os.path.getsize(full), _sha256(full)]
    return contents


def write_record(path, writer):
    """Records that `writer` (a tool's name) wrote what is now at `path`, file or folder."""
    record = {'writer': writer, 'contents': _contents(path)}
    write_atomically(record_path(path), json.dumps(record, sort_keys=True).encode('utf-8'))


def check_output(path, writer, flag, overwrite):
    """Refuses to write `path` unless it is new, or with overwrite exactly what `writer` wrote.

    Args:
      path: the output (file or folder) about to be written.
      writer: the tool's name, as given to write_record.
      flag: the flag that named `path`, for the message.
      overwrite: the tool's --overwrite.
    Raises:
      OutputError: `path` exists without overwrite; or it has no record of
        `writer`, or differs from the record (a file added, changed or removed).
    """
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputError('%s %s exists; pass --overwrite to replace it' % (flag, path))
    try:
        with open(record_path(path)) as record_file:
            record = json.load(record_file)
    except (IOError, OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get('writer') != writer:
        raise OutputError('%s %s was not written by %s (it has no record %s); --overwrite '
                          'replaces only that: move it away or choose another name'
                          % (flag, path, writer, os.path.basename(record_path(path))))
    now, then = _contents(path), record.get('contents') or {}
    if now != then:
        changed = sorted(name for name in set(now) | set(then) if now.get(name) != then.get(name))
        raise OutputError('%s %s has changed since %s wrote it (%s); --overwrite replaces '
                          'only what it wrote: move it away or choose another name'
                          % (flag, path, writer, _listing(changed)))


def write_recorded(path, data, writer, flag, overwrite):
    """check_output, then write_atomically and write_record: one output file, replaced safely."""
    check_output(path, writer, flag, overwrite)  # again: it may have changed since the start
    write_atomically(path, data)
    write_record(path, writer)
