"""Partial FC over several processes: what the ranks exchange each step, with its gradients.

A head sharded over processes (HCCL ranks on Ascend, TensorFlow gRPC workers)
needs three collectives per step (losses.partial_fc):
  * every process's embeddings and labels, gathered in rank order, so each
    block scores the whole global batch;
  * the per-sample max and sums of the blocks' statistics, reduced over
    the processes, so every process computes the same loss.

Every process evaluates the same loss L, but its own block reaches L only
through its own statistics. The gradients are therefore not the collectives'
usual ones (HCCL registers allreduce's as another all-reduce sum, which would
count each block N times):
  * a reduced sum passes the gradient through unchanged: dL/d(own part) is
    dL/d(sum), which every process already holds;
  * the gathered batch's gradient in process r covers block r only; summed
    over the processes (an all-reduce) it is the whole dL/d(embeddings), of
    which each process keeps its own rows. Those rows are multiplied by N
    because the backbone's gradients are then averaged over the N processes,
    as in data parallelism (the weight decay must stay averaged, not summed).
A max is used only as the softmax's constant shift and for the accuracy,
neither of which is differentiated.
"""
import tensorflow.compat.v1 as tf

from losses import partial_fc


class HeadExchange(object):
    """The collectives of a head sharded over `size` processes, this one being `rank`.

    Args:
      all_gather: fn(tensor [n, ...]) -> [size * n, ...], the processes' tensors in
        rank order (forward only).
      all_reduce: fn(tensor, 'sum' or 'max') -> the element-wise reduction over the
        processes (forward only).
      rank, size: this process's rank and the number of processes.
    """

    def __init__(self, all_gather, all_reduce, rank, size):
        self._all_gather = all_gather
        self._all_reduce = all_reduce
        self.rank = rank
        self.size = size
        self.reductions = partial_fc.Reductions(max=self._max, sum=self._sum)

    def gather_batch(self, embeddings, labels):
        """Every process's embeddings [n, D] and labels [n], in rank order: [size * n, ...]."""
        rows = embeddings.get_shape().as_list()[0]
        all_gather, all_reduce, rank, size = (self._all_gather, self._all_reduce, self.rank,
                                              self.size)

        @tf.custom_gradient
        def gathered(local):
            def grad(upstream):
                whole = all_reduce(upstream, 'sum')
                return whole[rank * rows:(rank + 1) * rows] * float(size)
            return all_gather(local), grad

        with tf.name_scope('gather_batch'):
            # int32: HcomAllGather takes no int64 before later adapters (class ids fit).
            return gathered(embeddings), all_gather(tf.cast(labels, tf.int32))

    def _sum(self, tensor):
        @tf.custom_gradient
        def summed(local):
            return self._all_reduce(local, 'sum'), lambda upstream: upstream
        return summed(tensor)

    def _max(self, tensor):
        return tf.stop_gradient(self._all_reduce(tensor, 'max'))
