"""STAND-IN of npu_bridge.estimator.npu.npu_scope: attribute scopes on the graph.

Like the real ones, they tag every op built inside with a private attribute
through the default graph's attr scope (Graph._attr_scope, private TF API).
keep_dtype_scope: `_keep_dtype` = 1 (GE keeps the op's original dtype).
"""
import contextlib
from enum import Enum

import tensorflow.compat.v1 as tf
from tensorflow.core.framework import attr_value_pb2

from npu_bridge import standin


class NpuExecutePlacement(Enum):
    """Where npu_variable_scope puts variables."""
    ALL = 'all'
    HOST = 'host'


@contextlib.contextmanager
def _attr_scope(attrs):
    with tf.get_default_graph()._attr_scope(attrs):
        yield


def without_npu_compile_scope():
    """Ops built inside are not compiled for the NPU (`_without_npu_compile` = True)."""
    standin.record('npu_scope.without_npu_compile_scope')
    return _attr_scope({'_without_npu_compile': attr_value_pb2.AttrValue(b=True)})


def npu_variable_scope(placement=NpuExecutePlacement.ALL):
    """Ops built inside get `_variable_placement` = placement.value."""
    if placement not in NpuExecutePlacement:
        raise ValueError("placement vaule must be in NpuExecutePlacement's vaule")
    standin.record('npu_scope.npu_variable_scope', placement=placement.value)
    return _attr_scope({'_variable_placement':
                        attr_value_pb2.AttrValue(s=placement.value.encode())})


def keep_dtype_scope():
    """Ops built inside keep their original precision (`_keep_dtype` = 1)."""
    standin.record('npu_scope.keep_dtype_scope',
                   name_scope=tf.get_default_graph().get_name_scope())
    return _attr_scope({'_keep_dtype': attr_value_pb2.AttrValue(i=1)})
