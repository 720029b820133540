"""The training graph: input pipeline, towers, margin head, optimizer and learning-rate
schedule. Validation runs in a graph of its own (validation_graph.py).

`build_graph(spec, plan)` returns a dict of the tensors the loop (trainer.py) runs.
"""
import collections
import functools

import tensorflow.compat.v1 as tf

from data import image_ops, input_pipeline
from devices import distributed, finite_flag, head_exchange, parallel, runtime
from losses import objective, partial_fc

def clip_backbone_gradients(max_norm, scope='resnet_v1_'):
    """fn(grads_and_vars) clipping the backbone's gradients to a global norm of max_norm.

    insightface's PyTorch trainer (arcface_torch) clips its backbone's gradients
    to norm 5 and not the margin head's; without it a scale-64 margin head
    trained from scratch can blow the backbone up in the first steps.
    """
    def clip(grads_and_vars):
        chosen = [i for i, (grad, var) in enumerate(grads_and_vars)
                  if grad is not None and var.op.name.startswith(scope)]
        clipped, _ = tf.clip_by_global_norm([grads_and_vars[i][0] for i in chosen], max_norm)
        result = list(grads_and_vars)
        for i, grad in zip(chosen, clipped):
            result[i] = (grad, grads_and_vars[i][1])
        return result
    return clip


def learning_rate(global_step, boundaries, values, warmup_steps=0):
    """The original's piecewise-constant schedule, with an optional linear warm-up.

    Boundaries count global steps, which advance once per iteration here
    (the original's advanced twice, so it decayed after half as many
    iterations; see docs/training.md). The warm-up scales the rate during the first
    `warmup_steps` iterations; 0: off.
    """
    rate = tf.train.piecewise_constant(global_step, list(boundaries), list(values))
    if warmup_steps:
        progress = tf.cast(global_step + 1, tf.float32) / float(warmup_steps)
        rate = rate * tf.minimum(1.0, progress)
    return tf.identity(rate, name='learning_rate')


def margin_args(loss_type, margin_m=None, margin_s=None, combine_margins=None):
    """The head's keyword arguments (None: the head's default)."""
    if loss_type == 'combine':
        m1, m2, m3 = combine_margins
        result = {'m1': m1, 'm2': m2, 'm3': m3}
    else:
        result = {} if margin_m is None else {'m': margin_m}
    if margin_s is not None:
        result['s'] = margin_s
    return result


def augmentation(augment, strength, random_erase, image_width):
    """input_pipeline arguments of --augment, --augment_strength and --random_erase.

    At strength 1: shifts up to 1/14 of the width (8 pixels at 112),
    crops of 90-100% of the side, brightness +-0.1, contrast x0.8-1.2; the
    strength scales every range (crops and contrast bounded so images stay images).
    Random erasing (its largest side, a fraction; 0/None: off) works with or
    without the rest.
    """
    result = {}
    if augment:
        result.update({
            'max_translation': max(1, int(round(image_width / 14.0 * strength))),
            'crop_scale': (max(0.5, 1.0 - 0.1 * strength), 1.0),
            'brightness_delta': 0.1 * strength,
            'contrast_range': (max(0.2, 1.0 - 0.2 * strength), 1.0 + 0.2 * strength)})
    if random_erase:
        result['erase_max_side'] = random_erase
    return result


GraphSpec = collections.namedtuple('GraphSpec', [
    'net_depth', 'net_width', 'norm',   # the network (nets.L_Resnet_E_IR VARIANTS, NORMS)
    'image_size', 'net_input_size',     # its input (data size)
    'loss_type', 'margin', 'weight_decay', 'keep_prob',  # margin: margin_args()
    'batch_size', 'eval_batch_size', 'buffer_size',
    'augmentation',      # input_pipeline arguments: augmentation()
    'max_bad_records', 'seed',
    'lr_values', 'warmup_steps', 'momentum', 'clip_gradient_norm',
    'summary_histograms',
    'partial_fc', 'sample_rate',  # the head in one block per tower (losses.partial_fc)
])


def build_graph(spec, plan):
    """The training graph; returns a dict of the tensors the loop uses."""
    if spec.seed is not None:
        tf.set_random_seed(spec.seed)
    global_step = tf.train.get_or_create_global_step()
    # A record that cannot be read or decoded is skipped and named, not a crash that
    # every rerun meets again; over --max_bad_records the pipeline fails (see _loop).
    # With several processes the pipeline goes on and the processes agree to stop.
    bad_records = input_pipeline.BadRecords(spec.max_bad_records,
                                            stop_pipeline=plan.world_size == 1)
    dataset = input_pipeline.build_dataset(
        plan.manifest['shard_paths'], spec.batch_size, tuple(spec.image_size),
        buffer_size=spec.buffer_size, seed=spec.seed, num_shards=plan.world_size,
        shard_index=plan.rank, on_bad_record=bad_records,
        records_per_file=[shard['num_images'] for shard in plan.manifest.get('shards', ())],
        **spec.augmentation)
    # Initializable, not one-shot: Ascend's loop sinking refuses one-shot iterators.
    iterator = tf.data.make_initializable_iterator(dataset)
    images, labels = iterator.get_next()
    images = image_ops.resize_for_network(images, spec.net_input_size)

    float32_scope = functools.partial(runtime.float32_scope, plan.device, plan.cpu_bfloat16)

    def loss_fn(batch_images, batch_labels):
        losses = objective.training_losses(
            batch_images, batch_labels, spec.net_depth, plan.num_classes, spec.loss_type,
            spec.margin, spec.weight_decay, spec.keep_prob, runtime.dropout_fn(plan.device),
            float32_scope, variant=spec.net_width, norm=spec.norm, seed=spec.seed)
        return losses.inference, losses.weight_decay, losses

    def embed_fn(batch_images):
        return objective.training_embedding(batch_images, spec.net_depth, spec.keep_prob,
                                            runtime.dropout_fn(plan.device), spec.net_width,
                                            spec.norm)

    collectives = distributed.Collectives(plan.cluster) if plan.cluster else None
    # Partial FC over several processes: every tower of every process holds a block.
    exchange, combine_fn = None, None
    if spec.partial_fc and plan.world_size > 1:
        exchange, combine_fn = _head_exchange(plan, collectives)
    towers_here = len(plan.towers) or 1

    def head_fn(batch_embeddings, batch_labels, block_devices):
        return objective.partial_fc_losses(
            batch_embeddings, batch_labels, plan.num_classes, spec.loss_type, spec.margin,
            spec.weight_decay, spec.sample_rate, spec.seed, block_devices,
            first_block=plan.rank * towers_here, num_blocks=plan.head_blocks,
            reduce=exchange.reductions if exchange else partial_fc.ONE_PROCESS,
            float32_scope=float32_scope)

    lr = learning_rate(global_step, plan.lr_boundaries, spec.lr_values, spec.warmup_steps)
    optimizer = tf.train.MomentumOptimizer(lr, spec.momentum)
    optimizer = runtime.wrap_optimizer(optimizer, plan.device, plan.loss_scaling,
                                       distributed=plan.world_size > 1,
                                       all_reduce_gradients=exchange is None)
    clip = clip_backbone_gradients(spec.clip_gradient_norm) if spec.clip_gradient_norm else None
    if spec.partial_fc:
        losses, train_op, grads_and_vars = parallel.build_sharded_train_op(
            images, labels, embed_fn, head_fn, optimizer, global_step, devices=plan.towers,
            gradient_fn=clip, exchange=exchange, combine_fn=combine_fn)
    else:
        losses, train_op, grads_and_vars = parallel.build_train_op(
            images, labels, loss_fn, optimizer, global_step, devices=plan.towers,
            combine_fn=collectives.all_reduce_mean if collectives else None, gradient_fn=clip)
    # The step this run completed, read after the update: fetched beside train_op
    # without the dependency, it could be the value before or after the increment.
    with tf.control_dependencies([train_op]):
        step_after_update = global_step.read_value()
    fetches = {'train': train_op, 'step': step_after_update, 'lr': lr,
               'total_loss': losses.total, 'inference_loss': losses.inference,
               'wd_loss': losses.weight_decay, 'accuracy': losses.accuracy}
    overflow = finite_flag.overflow_indicator(plan.loss_scaling)
    if overflow is not None:  # the step's update was skipped (loss scaling)
        fetches['overflow'] = overflow
    stop_vote = None
    if plan.world_size > 1:  # every process reads the same decision to stop, each step
        if collectives is not None:
            def sum_fn(tensor):
                return collectives.all_reduce_mean([tensor])[0]
        else:
            sum_fn = runtime.hccl_all_reduce_sum
        stop_vote = distributed.shared_stop(sum_fn, losses.total)
        fetches['stop_votes'] = stop_vote.agreed
    # Every variable, so built last; but not the blocks of a head sharded over the
    # processes (and their slots), which each process holds alone.
    own, shared = [], []
    for var in tf.global_variables():
        alone = exchange is not None and partial_fc.is_block_variable(var.op.name,
                                                                      spec.loss_type)
        (own if alone else shared).append(var)
    broadcast = None
    if plan.device == 'npu' and plan.world_size > 1:
        broadcast = runtime.broadcast_variables_op(plan.device, shared)
    elif collectives is not None:  # TensorFlow gRPC workers
        broadcast = collectives.broadcast_variables(shared)
    histograms = None
    if spec.summary_histograms:
        histograms = {'gradients': {var.op.name + '/gradients': grad
                                    for grad, var in grads_and_vars if grad is not None},
                      'variables': {var.op.name: var for var in tf.trainable_variables()}}
    return {'fetches': fetches, 'histograms': histograms, 'global_step': global_step,
            'bad_records': bad_records, 'train_op': train_op,
            'init_local': tf.group(tf.local_variables_initializer(), iterator.initializer),
            'broadcast': broadcast, 'own_variables': own,
            'barrier': collectives.barrier() if collectives else None, 'stop_vote': stop_vote}


def _head_exchange(plan, collectives):
    """(HeadExchange, the backbone gradients' mean over the processes) of a head sharded
    over the HCCL ranks (NPU) or the gRPC workers."""
    if collectives is not None:
        return (head_exchange.HeadExchange(collectives.all_gather, collectives.all_reduce,
                                           plan.rank, plan.world_size),
                collectives.all_reduce_mean)

    def all_gather(tensor):
        return runtime.hccl_all_gather(tensor, plan.world_size)

    def all_reduce_mean(tensors):
        return runtime.hccl_all_reduce_mean(tensors, plan.world_size)
    return (head_exchange.HeadExchange(all_gather, runtime.hccl_all_reduce, plan.rank,
                                       plan.world_size), all_reduce_mean)
