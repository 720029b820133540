"""What the benchmarks ran on, and the machine's practical float32 peak.

`describe` names the CPU, core count, memory and software versions, so a
figure is never read without its machine. `matmul_peak` times dense float32
matrix multiplies through TensorFlow (the library the model runs on, with the
same threads) and keeps the best rate: the practical ceiling a convolution
network's step can be compared against.
"""
import os
import platform
import time

import numpy as np


def _cpuinfo_field(name):
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith(name):
                    return line.split(':', 1)[1].strip()
    except IOError:
        pass
    return None


def proc_kib(path, field):
    """A `Field:  N kB` line of a /proc file (meminfo, <pid>/status) in KiB; None if absent
    (or the process has ended)."""
    try:
        with open(path) as info:
            for line in info:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except IOError:
        pass
    return None


def _memory_gib():
    kib = proc_kib('/proc/meminfo', 'MemTotal')
    return kib / 1024.0 ** 2 if kib else None


def _cpu_features():
    flags = (_cpuinfo_field('flags') or '').split()
    return [f for f in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile') if f in flags]


def describe():
    """A dict describing this machine and the software the figures depend on."""
    import tensorflow as tf  # the caller's environment decides which version
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    memory = _memory_gib()
    return {
        'cpu': _cpuinfo_field('model name') or platform.processor() or platform.machine(),
        'cpu_features': _cpu_features(),
        'logical_cpus': os.cpu_count(),
        'usable_cpus': usable,
        'memory_gib': round(memory, 1) if memory else None,
        'os': platform.platform(),
        'python': platform.python_version(),
        'tensorflow': tf.__version__,
        'numpy': np.__version__,
        # TF 2.9+ on x86 Linux uses oneDNN kernels unless this says 0; TF 1.15's
        # pip wheel has no oneDNN.
        'TF_ENABLE_ONEDNN_OPTS': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'),
        # intel-tensorflow 1.15 is a oneDNN build with the stock wheel's version number.
        'onednn_build': tf.__version__.startswith('1.') and _is_onednn_build(),
    }


def _is_onednn_build():
    try:
        from tensorflow.python.framework import test_util
        return bool(test_util.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


def matmul_peak(sizes=(1024, 2048, 4096), seconds_per_size=2.0, session_config=None,
                dtype='float32'):
    """Best GFLOP/s (float32, or dtype) of an n x n by n x n matmul over `sizes`.

    Each size runs back-to-back for about `seconds_per_size` after a warm-up;
    a multiply is 2 n^3 floating-point operations. The result is reduced to a
    scalar in the graph so no copy to NumPy is timed.

    Returns:
      {'gflops': best rate, 'size': the n that reached it, 'by_size': {n: rate}}.
    """
    import tensorflow.compat.v1 as tf
    by_size = {}
    for n in sizes:
        with tf.Graph().as_default():
            a = tf.Variable(tf.cast(tf.random_normal([n, n], seed=1), dtype))
            b = tf.Variable(tf.cast(tf.random_normal([n, n], seed=2), dtype))
            product = tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))
            with tf.Session(config=session_config) as sess:
                sess.run(tf.global_variables_initializer())
                sess.run(product)
                start = time.time()
                runs = 0
                while runs < 3 or time.time() - start < seconds_per_size:
                    sess.run(product)
                    runs += 1
                elapsed = time.time() - start
        by_size[n] = 2.0 * n ** 3 * runs / elapsed / 1e9
    best = max(by_size, key=by_size.get)
    return {'gflops': by_size[best], 'size': best, 'by_size': by_size}
