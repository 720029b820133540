"""Counts a graph's convolution and matrix-multiply FLOPs from its static shapes.

A multiply-add is two floating-point operations. Only Conv2D and MatMul are
counted: batch norm, PReLU and additions are a few operations per activation,
well under 1% of a ResNet's work. A training step is about three forward
passes (the forward pass, then the gradients with respect to activations and
to weights, each costing as much as the forward).
"""

TRAINING_TO_FORWARD = 3.0


def _shape(tensor):
    shape = tensor.get_shape()
    if shape.ndims is None or None in shape.as_list():
        raise ValueError('%s has no static shape (%s); FLOPs need a fixed batch size'
                         % (tensor.name, shape))
    return shape.as_list()


def op_flops(op):
    """FLOPs of one Conv2D or MatMul operation; 0 for any other op."""
    if op.type == 'Conv2D':
        kernel_h, kernel_w, in_channels, _ = _shape(op.inputs[1])
        batch, out_h, out_w, out_channels = _shape(op.outputs[0])  # NHWC
        return 2 * batch * out_h * out_w * out_channels * kernel_h * kernel_w * in_channels
    if op.type == 'MatMul':
        rows, cols = _shape(op.outputs[0])
        left = _shape(op.inputs[0])
        inner = left[0] if op.get_attr('transpose_a') else left[1]
        return 2 * rows * cols * inner
    return 0


def forward_flops(graph, name_prefix):
    """Total FLOPs of the ops whose names start with `name_prefix`.

    With a training graph and an inference graph sharing variables, the
    training backbone's ops sit under 'resnet_v1_<depth>/' and the
    inference copy under 'resnet_v1_<depth>_1/', so the prefix (with its
    slash) picks one; gradients live under 'gradients/' and are excluded.
    """
    return sum(op_flops(op) for op in graph.get_operations() if op.name.startswith(name_prefix))
