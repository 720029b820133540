"""TensorFlow's oneDNN bfloat16 graph rewrite on the CPU, described once.

What the rewrite needs (a TensorFlow that has it, oneDNN on, a CPU with
bfloat16 instructions), how a session turns it on, and the marker op that
keeps a tensor's consumers in float32. devices.runtime decides when it is used
(--mixed_precision) and is the only importer.
"""
import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

# TensorFlow's name of the rewrite (2.9 and later; absent in 1.15).
REWRITE = 'auto_mixed_precision_onednn_bfloat16'
# An op that passes its input through, put where float32 must begin; moved from
# the rewrite's "clear" list (follow the neighbours) to its deny list, it keeps
# everything computed from it in float32, gradients included.
FLOAT32_MARKER_OP = 'EnsureShape'
CPU_FLAGS = ('avx512_bf16', 'amx_bf16')  # x86 instructions computing bfloat16


def _cpu_flags(cpuinfo):
    """The instruction-set flags of the first processor in `cpuinfo`; empty if unreadable."""
    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except (IOError, OSError):
        pass
    return set()


def refusal(cpuinfo='/proc/cpuinfo'):
    """None where the CPU can train in bfloat16; else why not, as a sentence's end."""
    if REWRITE not in RewriterConfig.DESCRIPTOR.fields_by_name:
        return ('TensorFlow %s has no oneDNN bfloat16 rewrite (TensorFlow 2.9 or later has)'
                % tf.__version__)
    if os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() in ('0', 'false'):
        return 'TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN, which computes bfloat16, off'
    if not _cpu_flags(cpuinfo) & set(CPU_FLAGS):
        return ('this CPU has no bfloat16 instructions (%s in %s)'
                % (' or '.join(CPU_FLAGS), cpuinfo))
    return None


def enable(config):
    """Turns the rewrite on in `config`, with FLOAT32_MARKER_OP on its deny list."""
    # The lists are read by the rewrite each time it runs, i.e. when a session starts.
    _add_to_env_list('TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_CLEARLIST_REMOVE', FLOAT32_MARKER_OP)
    _add_to_env_list('TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_DENYLIST_ADD', FLOAT32_MARKER_OP)
    setattr(config.graph_options.rewrite_options, REWRITE, RewriterConfig.ON)


def float32_marker(tensor):
    """`tensor` through FLOAT32_MARKER_OP: what is computed from it stays float32."""
    return tf.ensure_shape(tensor, tensor.shape)


def _add_to_env_list(name, item):
    """Adds `item` to the comma-separated list in environment variable `name`."""
    items = [entry for entry in os.environ.get(name, '').split(',') if entry]
    if item not in items:
        os.environ[name] = ','.join(items + [item])
