"""STAND-IN of npu_bridge.hccl.hccl_ops: allreduce, allgather and broadcast.

With HCCL off or one rank they are identities (after the op's dtype and
attribute checks); with HCCL on and RANK_SIZE > 1 they are TensorFlow
collective ops among the rank processes (see npu_bridge/_hccl.py), so values
really cross processes.
"""
import tensorflow.compat.v1 as tf
from tensorflow.python.ops import collective_ops

from npu_bridge import _hccl
from npu_bridge import standin

WORLD_GROUP = 'hccl_world_group'
REDUCTIONS = ('min', 'max', 'prod', 'sum')


def _allreduce_dtypes():
    # HcomAllReduce's T: 5 types up to r1.10, +bfloat16 in r1.12, +int64 in r1.15.
    dtypes = [tf.int8, tf.int16, tf.int32, tf.float16, tf.float32]
    if standin.models_master():
        dtypes += [tf.bfloat16, tf.int64]
    return dtypes


def _check_group(group):
    if group != WORLD_GROUP:
        raise ValueError('npu_bridge STAND-IN: group %r was never created (only %r is modelled)'
                         % (group, WORLD_GROUP))


def allreduce(tensor, reduction, fusion=1, fusion_id=-1, group=WORLD_GROUP):
    """All-reduce over the ranks ('sum', 'prod', 'min' or 'max'), like HcomAllReduce.

    Raises:
      TypeError: a dtype HcomAllReduce does not accept (at graph build, like the op).
      ValueError: another reduction (the op's attribute allows four).
    """
    tensor = tf.convert_to_tensor(tensor)
    dtype = tensor.dtype.base_dtype
    if dtype not in _allreduce_dtypes():
        raise TypeError("Value passed to parameter 'input' of HcomAllReduce has DataType %s not "
                        "in list of allowed values: %s"
                        % (dtype.name, ', '.join(d.name for d in _allreduce_dtypes())))
    if reduction not in REDUCTIONS:
        raise ValueError("HcomAllReduce: reduction %r is not in the list of allowed values: %s"
                         % (reduction, ', '.join(REDUCTIONS)))
    _check_group(group)
    standin.record('hccl_ops.allreduce', tensor=tensor.name, reduction=reduction, fusion=fusion,
                   fusion_id=fusion_id, group=group)
    world = _hccl.collective_world()
    if world is None:
        return tf.identity(tensor)
    rank, size = world
    graph = tf.get_default_graph()
    shape = tensor.get_shape()
    # TF's CPU collectives reduce float32/64 and int32/64; carry the others in a wider type.
    carrier = {tf.int8: tf.int32, tf.int16: tf.int32, tf.float16: tf.float32,
               tf.bfloat16: tf.float32}.get(dtype, dtype)
    with tf.name_scope('HcomAllReduce'), tf.device(_hccl.device(rank)):
        # TF 1.15's collective ops need their input placed on the collective's device.
        value = tf.identity(tf.cast(tensor, carrier))
        key = _hccl.next_instance_key(graph)
        if reduction in ('sum', 'prod'):
            merge = 'Add' if reduction == 'sum' else 'Mul'
            result = collective_ops.all_reduce(value, size, _hccl.GROUP_KEY, key, merge, 'Id')
        else:
            gathered = collective_ops.all_gather(tf.expand_dims(value, 0), size,
                                                 _hccl.GROUP_KEY, key)
            reduce_fn = tf.reduce_min if reduction == 'min' else tf.reduce_max
            result = reduce_fn(gathered, axis=0)
        result = tf.cast(result, dtype)
    result.set_shape(shape)
    return result


# HcomAllGather's T on every adapter (later ones add int64 and uint64).
ALLGATHER_DTYPES = (tf.int8, tf.int16, tf.int32, tf.float16, tf.float32)


def allgather(tensor, rank_size, group=WORLD_GROUP):
    """The ranks' tensors concatenated along dimension 0 in rank order, like HcomAllGather.

    As strict as the op: its dtypes, no scalars, rank_size > 0 (the op's shape function
    aborts the process otherwise) and equal to the ranks that take part (a real HCCL
    fails or hangs on another); no gradient is registered, as none is for the real op.

    Raises:
      TypeError: a dtype HcomAllGather does not accept (at graph build, like the op).
      ValueError: a scalar, or a rank_size that is not the job's.
    """
    tensor = tf.convert_to_tensor(tensor)
    dtype = tensor.dtype.base_dtype
    if dtype not in ALLGATHER_DTYPES:
        raise TypeError("Value passed to parameter 'input' of HcomAllGather has DataType %s not "
                        "in list of allowed values: %s"
                        % (dtype.name, ', '.join(d.name for d in ALLGATHER_DTYPES)))
    shape = tensor.get_shape()
    if shape.ndims is not None and shape.ndims < 1:
        raise ValueError('Shape must be at least rank 1 but is rank 0 for HcomAllGather')
    if not isinstance(rank_size, int) or rank_size < 1:
        raise ValueError('npu_bridge STAND-IN: HcomAllGather rank_size %r: rankSize should be '
                         'greater than 0 (the real op aborts the process)' % (rank_size,))
    _check_group(group)
    world = _hccl.collective_world()
    size = 1 if world is None else world[1]
    if rank_size != size:
        raise ValueError('npu_bridge STAND-IN: HcomAllGather rank_size %d but %d rank(s) take '
                         'part (RANK_SIZE); a real HCCL fails or waits' % (rank_size, size))
    standin.record('hccl_ops.allgather', tensor=tensor.name, rank_size=rank_size, group=group)
    if world is None:
        return tf.identity(tensor)
    rank = world[0]
    carrier = {tf.int8: tf.int32, tf.int16: tf.int32, tf.float16: tf.float32}.get(dtype, dtype)
    with tf.name_scope('HcomAllGather'), tf.device(_hccl.device(rank)):
        value = tf.identity(tf.cast(tensor, carrier))
        gathered = collective_ops.all_gather(value, size, _hccl.GROUP_KEY,
                                             _hccl.next_instance_key(tf.get_default_graph()))
        result = tf.cast(gathered, dtype)
    if shape.ndims is not None:
        first = tf.compat.dimension_value(shape[0])
        result.set_shape([None if first is None else first * size] + shape[1:].as_list())
    return result


if standin.at_least_r1_5():
    def broadcast(tensor, root_rank, fusion=2, fusion_id=0, group=WORLD_GROUP):
        """Every rank receives root_rank's values, like HcomBroadcast.

        Args:
          tensor: a list of tensors (the op takes and returns a list).
          root_rank: the rank whose values everyone receives.
        Returns:
          a list of tensors, same order, shapes and dtypes.
        """
        return _broadcast(tensor, root_rank, fusion, fusion_id, group)
else:
    def broadcast(tensor, root_rank, fusion=0, fusion_id=-1, group=WORLD_GROUP):
        """r1.2.0's broadcast: as above, fusion 0 and fusion_id -1 by default."""
        return _broadcast(tensor, root_rank, fusion, fusion_id, group)


def _broadcast(tensor, root_rank, fusion, fusion_id, group):
    if not isinstance(tensor, (list, tuple)):
        raise TypeError("Expected list for 'input' argument to 'HcomBroadcast' Op, not %r."
                        % (tensor,))
    _check_group(group)
    tensors = [tf.convert_to_tensor(t) for t in tensor]
    if not standin.calls('hccl_ops.broadcast'):
        # What existed when the first broadcast was asked for, so a test in
        # another process can compare the broadcast set with it.
        standin.record('tf.global_variables', names=sorted(v.name for v in tf.global_variables()))
    standin.record('hccl_ops.broadcast', tensors=[getattr(t, 'name', str(t)) for t in tensor],
                   root_rank=root_rank,
                   group=group, fusion=fusion, fusion_id=fusion_id)
    world = _hccl.collective_world()
    if world is None:
        return [tf.identity(t) for t in tensors]
    rank, size = world
    if not 0 <= root_rank < size:
        raise ValueError('HcomBroadcast: root_rank %d is out of range for %d ranks'
                         % (root_rank, size))
    graph = tf.get_default_graph()
    results = []
    with tf.name_scope('HcomBroadcast'), tf.device(_hccl.device(rank)):
        for t in tensors:
            shape, dtype = t.get_shape(), t.dtype.base_dtype
            if not shape.is_fully_defined():
                raise ValueError('npu_bridge STAND-IN: broadcast of %s needs a static shape, '
                                 'got %s' % (t.name, shape))
            key = _hccl.next_instance_key(graph)
            if rank == root_rank:
                results.append(collective_ops.broadcast_send(tf.identity(t), shape, dtype, size,
                                                             _hccl.GROUP_KEY, key))
            else:
                results.append(collective_ops.broadcast_recv(shape, dtype, size,
                                                             _hccl.GROUP_KEY, key))
    return results
