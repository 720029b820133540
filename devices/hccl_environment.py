"""Which HCCL rank this process is, from the environment Huawei's launch tools set.

One process per Ascend device: RANK_SIZE, RANK_ID, ASCEND_DEVICE_ID (or
DEVICE_ID), JOB_ID and RANK_TABLE_FILE describe the job, the way CANN's
adapter reads them (../shared/reference/npu_bridge_api.md, section 6).
Environment and rank-table checks only: no TensorFlow, no HCCL call.
"""
import json
import logging
import os


def hccl_ranks(environ=None):
    """(rank, world_size) of a process launched one per Ascend device with HCCL's variables.

    Called for the NPU only. RANK_SIZE above 1 also needs RANK_ID,
    ASCEND_DEVICE_ID (or the older DEVICE_ID), JOB_ID and RANK_TABLE_FILE, a
    rank table in Huawei's format 1.0 (`server_list[].device[]` with
    `device_id`, `device_ip`, `rank_id`; test/rank_table_8p.json is an
    example). CANN's adapter starts HCCL whenever RANK_TABLE_FILE is non-empty
    and RANK_SIZE (1 if unset) is positive, so with RANK_SIZE unset or 1 a
    RANK_TABLE_FILE is refused unless it lists exactly one device (a one-rank
    HCCL job, checked like any other). The table's device_id is physical; it
    is compared with the device of this process where that is known as a
    physical id too (see _check_rank_device). No HCCL call is made here, so
    npu_ops.initialize_system is not needed.

    Args:
      environ: the environment mapping; None: os.environ.
    Returns:
      (rank, world_size); (0, 1) when RANK_SIZE is unset or 1 and RANK_TABLE_FILE is not set.
    Raises:
      ValueError: one line naming the missing or inconsistent variable.
    """
    env = os.environ if environ is None else environ
    size = _env_int(env, 'RANK_SIZE', '1')
    if size < 1:
        raise ValueError('RANK_SIZE=%d: expected a positive integer' % size)
    table = env.get('RANK_TABLE_FILE')
    if size == 1:
        if not table:
            return 0, 1
        listed = len(_rank_table_devices(table))
        if listed != 1:
            raise ValueError('RANK_TABLE_FILE is set but RANK_SIZE=%s: CANN\'s adapter would '
                             'start HCCL against that table (%d devices); unset RANK_TABLE_FILE '
                             'for a one-device run' % (env.get('RANK_SIZE', '1 (unset)'), listed))
    if 'RANK_ID' not in env:
        raise ValueError('RANK_SIZE=%d but RANK_ID is not set: export the rank of this '
                         'process, 0..%d' % (size, size - 1))
    rank = _env_int(env, 'RANK_ID')
    if not 0 <= rank < size:
        raise ValueError('RANK_ID=%d is out of range for RANK_SIZE=%d: expected 0..%d'
                         % (rank, size, size - 1))
    if 'ASCEND_DEVICE_ID' not in env and 'DEVICE_ID' not in env:
        raise ValueError('RANK_SIZE=%d but neither ASCEND_DEVICE_ID nor DEVICE_ID is set: '
                         'export the Ascend device of this process' % size)
    if not env.get('JOB_ID'):
        raise ValueError('RANK_SIZE=%d but JOB_ID is not set: export the same JOB_ID in every '
                         'process of the job' % size)
    if not table:
        raise ValueError('RANK_SIZE=%d but RANK_TABLE_FILE is not set: export the path of the '
                         'rank table JSON (example: test/rank_table_8p.json)' % size)
    devices = _rank_table_devices(table)
    if len(devices) != size:
        raise ValueError('RANK_TABLE_FILE=%s lists %d devices but RANK_SIZE=%d'
                         % (table, len(devices), size))
    if rank not in devices:
        raise ValueError('RANK_TABLE_FILE=%s has no rank_id %d' % (table, rank))
    _check_rank_device(env, 'RANK_TABLE_FILE=%s puts RANK_ID=%d on device_id %d'
                       % (table, rank, devices[rank]), devices[rank])
    return rank, size


def _check_rank_device(env, placement, physical):
    """Compares the rank table's physical device of this rank with the environment's.

    The adapter takes ASCEND_DEVICE_ID first, a logical id, else DEVICE_ID, a
    physical one (npu_attrs.cc). With ASCEND_RT_VISIBLE_DEVICES (physical ids,
    comma separated) logical id i is its i-th entry; without it the logical
    id only equals the physical one on a bare host: a container numbers its
    devices from 0 and no variable says which physical ones they are, so a
    difference there is only logged.

    Args:
      env: the environment mapping.
      placement: the start of the messages, naming the table, rank and device.
      physical: the rank table's device_id of this rank.
    Raises:
      ValueError: one line, where the two ids are comparable and differ.
    """
    visible_text = env.get('ASCEND_RT_VISIBLE_DEVICES', '').strip()
    visible = _visible_devices(visible_text) if visible_text else None
    if 'ASCEND_DEVICE_ID' in env:
        logical = _env_int(env, 'ASCEND_DEVICE_ID')
        if visible is None:
            if logical != physical:
                logging.warning('%s, but ASCEND_DEVICE_ID=%d: that is a logical id and the '
                                'table\'s a physical one; fine in a container (export '
                                'ASCEND_RT_VISIBLE_DEVICES to have them compared)',
                                placement, logical)
            return
        if not 0 <= logical < len(visible):
            raise ValueError('ASCEND_DEVICE_ID=%d is out of range for ASCEND_RT_VISIBLE_DEVICES=%s:'
                             ' expected 0..%d' % (logical, visible_text, len(visible) - 1))
        if visible[logical] != physical:
            raise ValueError('%s, but ASCEND_DEVICE_ID=%d is physical device %d '
                             '(ASCEND_RT_VISIBLE_DEVICES=%s)'
                             % (placement, logical, visible[logical], visible_text))
        return
    device = _env_int(env, 'DEVICE_ID')
    if device != physical:
        raise ValueError('%s, but DEVICE_ID=%d' % (placement, device))
    if visible is not None and device not in visible:
        raise ValueError('DEVICE_ID=%d is not in ASCEND_RT_VISIBLE_DEVICES=%s'
                         % (device, visible_text))


def _visible_devices(text):
    """The physical device ids of ASCEND_RT_VISIBLE_DEVICES ('4,5,6,7'), in order."""
    try:
        return [int(item) for item in text.split(',')]
    except ValueError:
        raise ValueError('ASCEND_RT_VISIBLE_DEVICES=%r: expected physical device ids separated '
                         'by commas, e.g. 4,5,6,7' % text)


def _env_int(env, name, default=None):
    text = env.get(name, default)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError('%s=%r: expected an integer' % (name, text))


def _rank_table_devices(path):
    """{rank_id: device_id} of a rank table file (format 1.0)."""
    if not os.path.isfile(path):
        raise ValueError('RANK_TABLE_FILE=%s: no such file' % path)
    try:
        with open(path) as table:
            servers = json.load(table)['server_list']
        return {int(device['rank_id']): int(device['device_id'])
                for server in servers for device in server['device']}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError('RANK_TABLE_FILE=%s is not a rank table (%s: %s); expected Huawei\'s '
                         'format 1.0 with server_list[].device[] holding device_id and rank_id'
                         % (path, type(error).__name__, error))
