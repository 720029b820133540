"""Where the graph runs: the one place that chooses NPU, GPU or CPU and absorbs the
differences between TensorFlow 1.15 and 2.x (runtime), towers over the devices of one
machine (parallel), and TensorFlow gRPC workers (distributed). May import data/, nets/ and
losses/."""
