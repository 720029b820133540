"""STAND-IN: records calls, does not run on an NPU. broadcast returns its inputs."""
import tensorflow.compat.v1 as tf

from npu_bridge import standin


def broadcast(tensor, root_rank, fusion=2, fusion_id=0, group='hccl_world_group'):
    if not standin.calls('hccl_ops.broadcast'):
        # What existed when the first broadcast was asked for, so a test in
        # another process can compare the broadcast set with it.
        standin.record('tf.global_variables', names=sorted(v.name for v in tf.global_variables()))
    standin.record('hccl_ops.broadcast', tensors=[t.name for t in tensor], root_rank=root_rank,
                   group=group)
    return [tf.identity(t) for t in tensor]
