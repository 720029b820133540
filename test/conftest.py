"""Test setup: graph mode once per process, and the read-only shared data."""
import os

import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
tf.logging.set_verbosity(tf.logging.ERROR)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(PROJECT_ROOT), 'shared', 'data')


@pytest.fixture(scope='session')
def shared_data():
    """Path of ../shared/data (read-only; tests never write there)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail('shared test data not found at %s' % SHARED_DATA)
    return SHARED_DATA
