"""TensorBoard summaries of the training loop, written from values fetched to the host.

Every summary is built on the host from values the loop fetched, not by
summary ops in the training graph: the NPU's sess.run mode does not return
summaries to the host (Huawei, TensorFlow 1.15 migration guide, "Log/Summary"),
and a device that compiles one graph per distinct set of fetches compiles the
training step once more, not once per summary kind.

Histograms go through TensorFlow's own HistogramSummary kernel in a small
graph on the host CPU, so their buckets are exactly those of the original's
`tf.summary.histogram` on every device.

Typical use:
    histograms = HostHistograms({'conv1/W_conv2d': ((3, 3, 3, 64), tf.float32)})
    writer.add_summary(scalar_summary({'total_loss': 1.5}), step)
    writer.add_summary(histograms.summary({'conv1/W_conv2d': array}), step)
"""
import tensorflow.compat.v1 as tf


def scalar_summary(values):
    """A tf.Summary of {tag: number}, tags sorted."""
    return tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))
                             for tag, value in sorted(values.items())])


class HostHistograms(object):
    """Histogram summaries of named arrays, computed on the host CPU."""

    def __init__(self, specs):
        """specs: {tag: (shape, tf.DType)} of the arrays summary() will get."""
        self._graph = tf.Graph()
        self._inputs = {}
        with self._graph.as_default(), tf.device('/cpu:0'):
            histograms = []
            for index, (tag, (shape, dtype)) in enumerate(sorted(specs.items())):
                self._inputs[tag] = tf.placeholder(dtype, shape, name='value_%d' % index)
                histograms.append(tf.summary.histogram(tag, self._inputs[tag]))
            self._merged = tf.summary.merge(histograms)
        # A plain session: no accelerator options, so it stays on the host.
        self._session = tf.Session(graph=self._graph,
                                   config=tf.ConfigProto(device_count={'GPU': 0}))

    def summary(self, values):
        """A serialized tf.Summary with one histogram per tag of `values`."""
        feed = {self._inputs[tag]: value for tag, value in values.items()}
        return self._session.run(self._merged, feed)

    def close(self):
        self._session.close()
