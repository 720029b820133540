"""network.json: the network a checkpoint folder of this project holds, beside its checkpoints.

The variables tell depth, width and normalisation, but not the input size the
network was trained at: --net_input_size 56,56 and 64,64 both end in a 4x4 map
and the same variable shapes. train_nets.py writes this small record into its
checkpoint folder (and best/) so that evaluation, export and feature extraction
use the trained input size without a flag, and refuse one that contradicts it.
The original's checkpoints have no record and keep working from their names.

Typical use:
    write(ckpt_dir, describe(50, 'standard', 'batch', (112, 112), 512))
    record = read(os.path.dirname(prefix))   # None without a record
"""
import json
import os

RECORD_NAME = 'network.json'
_FIELDS = ('net_depth', 'net_width', 'norm', 'input_size', 'embedding_size')


class RecordError(ValueError):
    """A network.json that cannot be read or lacks a field; one line."""


def describe(net_depth, net_width, norm, input_size, embedding_size):
    """The record of a network: what write() stores and read() returns."""
    return {'net_depth': int(net_depth), 'net_width': net_width, 'norm': norm,
            'input_size': [int(input_size[0]), int(input_size[1])],
            'embedding_size': int(embedding_size)}


def write(folder, record):
    """Writes `record` to folder/network.json, whole or not at all (a temporary file
    renamed over it)."""
    path = os.path.join(folder, RECORD_NAME)
    staging = path + '.partial'
    with open(staging, 'w') as f:
        json.dump(dict(record, written_by='train_nets.py'), f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(staging, path)


def read(folder):
    """The record in `folder`, or None if it has none.

    Raises:
      RecordError: the file is not JSON or lacks a field, naming it.
    """
    path = os.path.join(folder or '.', RECORD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (IOError, OSError, ValueError) as error:
        raise RecordError('%s: cannot read it (%s); it records the network of the checkpoints '
                          'beside it' % (path, error))
    missing = [field for field in _FIELDS if field not in record] if isinstance(record, dict) \
        else list(_FIELDS)
    if missing:
        raise RecordError('%s: expected the fields %s; %s missing'
                          % (path, ', '.join(_FIELDS), ', '.join(missing)))
    return record
