"""The training step's data parallelism: one place that turns losses into a train op.

Two kinds of data parallelism meet here, and they combine:
  * towers (train_nets_mgpu.py): the batch is split over several devices of
    this process; each device runs the same loss_fn on its part, sharing one
    set of variables, and the tower gradients are averaged in the graph;
  * workers (distributed.py, or HCCL on the NPU): several processes each run
    this graph on their own data, and `combine_fn` averages the gradients
    (and the reported losses) over all of them.

Towers follow tf-slim's model_deploy: name scopes `clone_%d` only when there
is more than one tower (so variable names stay the single-device ones),
variables created by tower 0 and reused by the others, each tower's
cross-entropy scaled by 1/N, weight decay added once (tower 0), batch-norm
moving-average updates from tower 0 only (each tower's batch statistics are
a sample of the same data), and the gradients summed.

Typical use:
    losses, train_op, grads_and_vars = build_train_op(images, labels, loss_fn, optimizer,
                                                      global_step, devices=['/gpu:0', '/gpu:1'])
"""
import contextlib

import tensorflow.compat.v1 as tf

__all__ = ['tower_scope', 'resolve_devices', 'configure_session', 'build_train_op',
           'build_sharded_train_op']


def tower_scope(index, num_towers):
    """Name scope of tower `index`: 'clone_<index>' with several towers, '' with one."""
    return 'clone_%d' % index if num_towers > 1 else ''


def _parse_device(name):
    """'/gpu:1', 'GPU:1', '/device:CPU:0' -> ('GPU', 1); raises ValueError otherwise."""
    text = name.strip()
    if not text.startswith('/'):
        text = '/' + text
    try:
        spec = tf.DeviceSpec.from_string(text)
    except (ValueError, TypeError) as error:
        raise ValueError('--devices %r: %s; expected names like /gpu:0 or /cpu:1'
                         % (name, error))
    kind = (spec.device_type or '').upper()
    if kind not in ('GPU', 'CPU') or spec.device_index is None or spec.job is not None:
        raise ValueError('--devices %r: expected a local GPU or CPU with its index, '
                         'like /gpu:0 or /cpu:1' % (name,))
    return kind, spec.device_index


def resolve_devices(num_gpus=None, devices=None, num_visible_gpus=None):
    """The tower devices of --num_gpus / --devices, as '/device:GPU:0'-style names.

    Args:
      num_gpus: None, or N for /gpu:0 .. /gpu:N-1.
      devices: None, or a list of device names ('/gpu:0', '/cpu:1', ...).
        With both given, their counts must agree.
      num_visible_gpus: GPUs TensorFlow sees; None asks TensorFlow.
    Returns:
      A list of device names; [] when neither flag is given (one device,
      placed by TensorFlow as in train_nets.py).
    Raises:
      ValueError: a one-line message naming the flag and the problem.
    """
    if num_gpus is not None and num_gpus < 1:
        raise ValueError('--num_gpus %d: expected a positive integer' % num_gpus)
    if devices:
        parsed = [_parse_device(name) for name in devices]
        if num_gpus is not None and num_gpus != len(parsed):
            raise ValueError('--num_gpus %d but --devices lists %d devices (%s); give one of '
                             'them, or the same count' % (num_gpus, len(parsed),
                                                          ','.join(devices)))
    elif num_gpus is not None:
        parsed = [('GPU', index) for index in range(num_gpus)]
    else:
        return []
    if len(set(parsed)) != len(parsed):
        raise ValueError('--devices %s names a device twice' % ','.join(devices))
    gpus = [index for kind, index in parsed if kind == 'GPU']
    if gpus:
        if num_visible_gpus is None:
            num_visible_gpus = len(tf.config.experimental.list_physical_devices('GPU'))
        if max(gpus) >= num_visible_gpus:
            raise ValueError('towers on GPU %d but TensorFlow sees %d GPU(s) here; use fewer, '
                             'or CPU towers (--devices /cpu:0,/cpu:1)'
                             % (max(gpus), num_visible_gpus))
    return ['/device:%s:%d' % pair for pair in parsed]


def configure_session(config, devices):
    """Adds the logical CPU devices that CPU towers need (`/cpu:1` exists only if asked for).

    Args:
      config: tf.ConfigProto, changed in place (also the one a tf.train.Server
        is started with, when distributed).
      devices: tower device names from resolve_devices.
    Returns:
      config.
    """
    cpus = [_parse_device(name)[1] for name in devices if _parse_device(name)[0] == 'CPU']
    if cpus and max(cpus) > 0:
        config.device_count['CPU'] = max(max(cpus) + 1, config.device_count.get('CPU', 1))
    return config


@contextlib.contextmanager
def _tower(index, num_towers, device):
    """Name scope (several towers only), device (if given), and reuse after tower 0.

    tf.name_scope(None) and tf.device(None) would reset the caller's scopes
    (a distributed worker pins everything to its task), so neither is entered
    when there is nothing to add.
    """
    with contextlib.ExitStack() as stack:
        if num_towers > 1:
            stack.enter_context(tf.name_scope(tower_scope(index, num_towers)))
        if device is not None:
            stack.enter_context(tf.device(device))
        if index > 0:
            stack.enter_context(tf.variable_scope(tf.get_variable_scope(), reuse=True))
        yield


def _split(images, labels, num_towers):
    if num_towers == 1:
        return [images], [labels]
    batch = images.get_shape().as_list()[0]
    if batch is None or batch % num_towers:
        raise ValueError('a batch of %s images cannot be split evenly over %d towers'
                         % (batch, num_towers))
    return tf.split(images, num_towers), tf.split(labels, num_towers)


def _tower_objective(data_loss, shared_loss, index, num_towers):
    """What tower `index` differentiates: its share of the data loss, plus the shared
    loss (weight decay: every tower reads the same variables) on tower 0 only."""
    if num_towers == 1:
        return tf.add(data_loss, shared_loss)
    share = data_loss / float(num_towers)
    return tf.add(share, shared_loss) if index == 0 else share


def _sum_gradients(tower_grads):
    """Sums the towers' (gradient, variable) lists, which share one variable order."""
    if len(tower_grads) == 1:
        return tower_grads[0]
    summed = []
    with tf.name_scope('sum_tower_gradients'):
        for pairs in zip(*tower_grads):
            var = pairs[0][1]
            grads = [tf.convert_to_tensor(grad) for grad, _ in pairs if grad is not None]
            summed.append((tf.add_n(grads) if grads else None, var))
    return summed


def _mean_reported(tower_reported):
    """The towers' reported values (namedtuples of scalars), each field averaged."""
    if len(tower_reported) == 1:
        return tower_reported[0]
    first = tower_reported[0]
    with tf.name_scope('mean_tower_losses'):
        return first._replace(**{
            field: tf.add_n([getattr(t, field) for t in tower_reported])
            / float(len(tower_reported)) for field in first._fields})


def _combine(grads_and_vars, losses, combine_fn):
    """Averages gradients and reported losses over the workers in one combine_fn call."""
    present = [(i, grad) for i, (grad, _) in enumerate(grads_and_vars) if grad is not None]
    fields = losses._fields
    tensors = [tf.convert_to_tensor(grad) for _, grad in present] + [getattr(losses, f)
                                                                     for f in fields]
    combined = combine_fn(tensors)
    grads_and_vars = list(grads_and_vars)
    for (i, _), grad in zip(present, combined):
        grads_and_vars[i] = (grad, grads_and_vars[i][1])
    return grads_and_vars, losses._replace(**dict(zip(fields, combined[len(present):])))


def build_train_op(images, labels, loss_fn, optimizer, global_step, devices=None,
                   combine_fn=None, gradient_fn=None):
    """Computes the losses, their gradients, and the op applying them.

    Args:
      images: float [N, H, W, 3] normalised batch (N divisible by the towers).
      labels: int [N].
      loss_fn: fn(images, labels) -> (data_loss, shared_loss, reported): scalar
        tensors, the loss of this batch (averaged over the towers) and a loss
        of the variables alone (weight decay, added once), and a namedtuple of
        scalars to report (averaged). Called once per tower, creating the
        variables on the first call.
      optimizer: a tf.train.Optimizer (possibly wrapped by runtime).
      global_step: incremented once per applied step.
      devices: tower device names (resolve_devices); None or [] builds one tower
        on the current device; one name pins the single tower there.
      combine_fn: None, or fn(list of Tensors) -> list of Tensors, each the mean
        of that tensor over all workers (distributed.Collectives.all_reduce_mean);
        applied to the gradients and to the reported losses.
      gradient_fn: None, or fn(grads_and_vars) -> grads_and_vars applied to the
        combined gradients just before the update (e.g. clipping).
    Returns:
      (loss_fn's `reported` over the whole batch (and all workers), train_op, the
      (gradient, variable) pairs it applies); the train op also runs tower 0's
      batch-norm moving-average updates.
    Raises:
      ValueError: the batch does not split evenly over the towers.
    """
    devices = list(devices or [None])
    num_towers = len(devices)
    image_parts, label_parts = _split(images, labels, num_towers)
    tower_reported, tower_grads = [], []
    for index, device in enumerate(devices):
        with _tower(index, num_towers, device):
            data_loss, shared_loss, reported = loss_fn(image_parts[index], label_parts[index])
            objective = _tower_objective(data_loss, shared_loss, index, num_towers)
            # Each tower's backward pass runs on its own device.
            colocate = {'colocate_gradients_with_ops': True} if num_towers > 1 else {}
            tower_grads.append(optimizer.compute_gradients(objective, **colocate))
        tower_reported.append(reported)
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS,
                                   scope=(tower_scope(0, num_towers) + '/') if num_towers > 1
                                   else None)
    grads_and_vars = _sum_gradients(tower_grads)
    losses = _mean_reported(tower_reported)
    if combine_fn is not None:
        grads_and_vars, losses = _combine(grads_and_vars, losses, combine_fn)
    if gradient_fn is not None:
        grads_and_vars = gradient_fn(grads_and_vars)
    with tf.control_dependencies(update_ops):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return losses, train_op, grads_and_vars


def build_sharded_train_op(images, labels, embed_fn, head_fn, optimizer, global_step,
                           devices=None, gradient_fn=None, exchange=None, combine_fn=None):
    """Partial FC's step: each tower embeds its share of the batch, and the margin head,
    split into one block of class centres per tower on that tower's device, scores the
    whole batch (losses.partial_fc).

    One loss over the whole batch is differentiated once: a tower's backbone gradient
    is the part of the batch it embedded, summed over the towers by the shared
    variables, and each block's gradient stays on its device.

    Over several processes (HCCL ranks, gRPC workers) the head scores every process's
    batch, gathered by `exchange`; each process's blocks are its own (their gradients
    are not combined), and the backbone's gradients are averaged by `combine_fn`.

    Args:
      images, labels: as build_train_op.
      embed_fn: fn(images) -> float [n, D] training-mode embeddings; called once
        per tower, creating the backbone's variables on the first call.
      head_fn: fn(embeddings [N, D], labels [N], block devices) -> TrainingLosses-like
        namedtuple whose `total` is minimised; called once, outside the towers.
      optimizer, global_step, devices, gradient_fn: as build_train_op.
      exchange: None in one process; else devices.head_exchange.HeadExchange, which
        gathers the batch (head_fn must reduce its statistics with its reductions).
      combine_fn: with `exchange`, fn(list of Tensors) -> their means over the
        processes (build_train_op's), applied to every gradient but the head's.
    Returns:
      (head_fn's losses, train_op, the (gradient, variable) pairs it applies).
    """
    devices = list(devices or [None])
    num_towers = len(devices)
    image_parts, _ = _split(images, labels, num_towers)
    embeddings = []
    for index, device in enumerate(devices):
        with _tower(index, num_towers, device):
            embeddings.append(embed_fn(image_parts[index]))
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS,
                                   scope=(tower_scope(0, num_towers) + '/') if num_towers > 1
                                   else None)
    batch = embeddings[0] if num_towers == 1 else tf.concat(embeddings, axis=0)
    if exchange is not None:
        batch, labels = exchange.gather_batch(batch, labels)
    before_head = {var.op.name for var in tf.trainable_variables()}
    losses = head_fn(batch, labels, devices)
    grads_and_vars = optimizer.compute_gradients(
        losses.total, colocate_gradients_with_ops=num_towers > 1)
    if exchange is not None:
        shared = [(i, pair) for i, pair in enumerate(grads_and_vars)
                  if pair[0] is not None and pair[1].op.name in before_head]
        combined = combine_fn([tf.convert_to_tensor(grad) for _, (grad, _) in shared])
        grads_and_vars = list(grads_and_vars)
        for (i, (_, var)), grad in zip(shared, combined):
            grads_and_vars[i] = (grad, var)
    if gradient_fn is not None:
        grads_and_vars = gradient_fn(grads_and_vars)
    with tf.control_dependencies(update_ops):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return losses, train_op, grads_and_vars
