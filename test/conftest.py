"""Test setup: graph mode once per process, the read-only shared data, a tiny dataset."""
import os
import socket

import pytest
import tensorflow.compat.v1 as tf

tf.logging.set_verbosity(tf.logging.ERROR)  # first: disable_v2_behavior logs a warning
tf.disable_v2_behavior()

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What Ascend's launch tools, CANN's adapter and the npu_bridge stand-in read from the
# environment: a test process starts from none of them, then sets what it needs.
NPU_ENVIRONMENT = ('RANK_SIZE', 'RANK_ID', 'RANK_TABLE_FILE', 'ASCEND_DEVICE_ID', 'DEVICE_ID',
                   'JOB_ID', 'POD_NAME', 'CM_WORKER_SIZE', 'CM_CHIEF_IP',
                   'ASCEND_RT_VISIBLE_DEVICES', 'NPU_STANDIN_OVERFLOW_CALLS',
                   'NPU_STANDIN_ADAPTER', 'NPU_STANDIN_NAN_AT', 'NPU_STANDIN_RECORD',
                   'NPU_STANDIN_HCCL_BASE_PORT')


def npu_environ(**env):
    """os.environ without NPU_ENVIRONMENT, then `env`: for a subprocess under test."""
    environ = {name: value for name, value in os.environ.items()
               if name not in NPU_ENVIRONMENT}
    environ.update(env)
    return environ


def free_port_base(count=2):
    """A port with `count` free ports from it on, on 127.0.0.1 (best effort: another
    process may take one before the caller binds it)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            base = probe.getsockname()[1]
        if base + count >= 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as other:
                    other.bind(('127.0.0.1', port))
            return base
        except OSError:
            continue
    raise RuntimeError('no %d free consecutive ports' % count)
# The files that take longest (pytest --durations, TF 2.21, 2 cores), first: tools/run_tests.sh
# hands whole files to its worker processes in collection order, and a long file handed out
# last would leave one worker alone at the end.
SLOWEST_FILES = ('test_own_data.py', 'test_train_nets.py', 'test_fault_injection.py',
                 'test_recipes.py', 'test_npu_wiring.py', 'test_npu_ranks.py',
                 'test_partial_fc_processes.py')


def pytest_configure(config):
    # pytest-xdist 3.6+ orders files by their number of tests (3.5, on Python 3.7, does
    # not); collection order, set below, is what balances the workers.
    if hasattr(config.option, 'loadscopereorder'):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)
    items.sort(key=rank)  # stable: the order within each file, and of the rest, is kept


SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), 'shared')
SHARED_DATA = os.path.join(SHARED, 'data')
SHARED_REFERENCE = os.path.join(SHARED, 'reference')
# A clone without ../shared skips the tests that need it; CI (CI=true) and
# REQUIRE_SHARED_DATA=1 make its absence a failure, so CI cannot pass by skipping.
SKIP_REASON = '../shared/data not present: real-data tests skipped'
REQUIRED = (os.environ.get('CI', '').strip().lower() == 'true'
            or os.environ.get('REQUIRE_SHARED_DATA', '').strip() == '1')


def _shared(path):
    if not os.path.isdir(path):
        if REQUIRED:
            pytest.fail('shared test data not found at %s (required: CI=true or '
                        'REQUIRE_SHARED_DATA=1)' % path)
        pytest.skip(SKIP_REASON)
    return path


@pytest.fixture(scope='session')
def shared_data():
    """Path of ../shared/data (read-only; tests never write there)."""
    return _shared(SHARED_DATA)


@pytest.fixture(scope='session')
def shared_reference():
    """Path of ../shared/reference: the original's variable lists."""
    return _shared(SHARED_REFERENCE)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """8 identities x 6 images of 32x32 in 2 TFRecord shards, and a 20-pair lfw.bin.

    Returns {'raw': the insightface-layout folder, 'records': the TFRecords folder};
    read-only for the tests that share it.
    """
    from data import mx2tfrecords
    from data.make_synthetic_dataset import make_dataset
    root = str(tmp_path_factory.mktemp('tiny'))
    raw = os.path.join(root, 'raw')
    make_dataset(raw, num_identities=8, images_per_identity=6, num_val_identities=4,
                 num_val_pairs=20, image_size=(32, 32), seed=3)
    records = os.path.join(root, 'tfrecords')
    mx2tfrecords.convert(os.path.join(raw, 'train.rec'), os.path.join(raw, 'train.idx'),
                         records, num_shards=2, progress=False)
    return {'raw': raw, 'records': records}


def truncate_jpeg(records_folder, shard, record):
    """Cuts one record's JPEG to a third in a TFRecords folder (in place) and updates the
    manifest's shard size; returns the shard's path. The record then fails to decode."""
    import json
    with open(os.path.join(records_folder, 'manifest.json')) as text:
        manifest = json.load(text)
    path = os.path.join(records_folder, manifest['shards'][shard]['file'])
    records = list(tf.io.tf_record_iterator(path))
    example = tf.train.Example.FromString(records[record])
    jpeg = example.features.feature['image_raw'].bytes_list.value[0]
    example.features.feature['image_raw'].bytes_list.value[0] = jpeg[:len(jpeg) // 3]
    records[record] = example.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for serialized in records:
            writer.write(serialized)
    manifest['shards'][shard]['size_bytes'] = os.path.getsize(path)
    with open(os.path.join(records_folder, 'manifest.json'), 'w') as out:
        json.dump(manifest, out)
    return path
