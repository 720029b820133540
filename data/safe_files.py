"""Files written so that a reader never sees half of one, and replaced only by their writer.

Replacing is limited to what a tool recorded writing: `--overwrite` must never
delete a user's file that happens to sit where an output goes. Folders of
outputs (TFRecord shards, a synthetic dataset) are recorded by their own
manifest (data/shard_writer.py, data/make_synthetic_dataset.py); single
outputs (a .bin, an .npz, an export's frozen graph or SavedModel) by a hidden
record beside them, `.<name>.written.json`, with each file's size and SHA-256.
Outputs made in a staging folder reach their place through move_into_place.

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


# Lists what a move_into_place into an existing folder is replacing, from before the
# first change until after the last, so that a run interrupted half-way leaves a
# record of what the next run may replace.
PENDING_NAME = '.outputs.pending.json'


def move_into_place(staging, folder, names, stale=(), last=None):
    """Moves the finished outputs `names` from `staging` into `folder`.

    A folder that does not exist yet is `staging` itself, renamed in one
    atomic step. Into an existing one, each name replaces its namesake (a file
    or a folder) and each `stale` name (an earlier run's output this run does
    not write) is removed; what is replaced or removed is moved into
    `staging`, for the caller to delete with it. The caller checks first that
    those are the tool's own outputs. A PENDING_NAME journal lists them all
    while the move is under way.

    Args:
      staging: the folder the outputs were written to, on the same file system.
      folder: where they go.
      names: entries of `staging` to move.
      stale: entries of `folder` to take away.
      last: the name in `names` whose presence says the folder is complete
        (a manifest): taken away first and put back last.
    """
    if not os.path.lexists(folder):
        os.rename(staging, folder)
        return
    journal = os.path.join(folder, PENDING_NAME)
    write_atomically(journal, json.dumps(sorted(set(names) | set(stale))).encode('utf-8'))
    for name in ([last] if last else []) + sorted(stale):
        _move_aside(folder, name, staging)
    for name in sorted(name for name in names if name != last) + ([last] if last else []):
        target = os.path.join(folder, name)
        if os.path.isdir(target) and not os.path.islink(target):
            _move_aside(folder, name, staging)  # os.replace replaces files, not folders
        os.replace(os.path.join(staging, name), target)
    os.remove(journal)


def _move_aside(folder, name, staging):
    """Moves folder/name, if there is one, into staging under a name no output has."""
    if os.path.lexists(os.path.join(folder, name)):
        os.rename(os.path.join(folder, name), os.path.join(staging, '.replaced.' + name))


def pending_names(folder):
    """The names an interrupted move_into_place into `folder` was replacing, with its
    journal's own; set() when there is no journal.

    Only plain names count: a doctored journal cannot point outside the folder.
    Callers keep only the names their tool writes.
    """
    try:
        with open(os.path.join(folder, PENDING_NAME)) as journal:
            names = json.load(journal)
    except (IOError, OSError, ValueError):
        return set()
    if not isinstance(names, list):
        return set()
    return {PENDING_NAME} | {name for name in names if isinstance(name, str) and name
                             and os.path.basename(name) == name and name not in ('.', '..')}


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


def record_path(path):
    """The hidden record of what a tool wrote at `path`: `.<name>.written.json` beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, '.%s.written.json' % name)


def file_sha256(path):
    """Hex SHA-256 of a file's bytes, read in 1 MiB pieces."""
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
        return {'.': 'link' if os.path.islink(path) else [os.path.getsize(path), file_sha256(path)]}
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
                contents[relative] = [os.path.getsize(full), file_sha256(full)]
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
