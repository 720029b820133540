"""Everything a training run needs, checked before any graph is built.

`prepare(args)` reads the dataset's manifest and the verification sets, checks
the flags against the data, the checkpoint to resume against the flags, and the
output folders, and returns a Plan: what `trainer.train` builds and runs. A
problem anywhere is one line (UsageError, CheckpointError) and no work done.
"""
import collections
import os

from data.cli import UsageError
from data.manifest import ManifestError, load_manifest
from devices import distributed, hccl_environment, npu_options, parallel, runtime
from losses import partial_fc
from nets import checkpoint_names
from nets.L_Resnet_E_IR import width_for
from evaluation import verification_sets
from evaluation.ijb_meta import IJBFormatError
from evaluation.ijb_validation import IJBValidation
from training import checkpoint_utils, cli_flags, train_graph, trainer
from training.checkpointing import BEST_SUBDIR

REFERENCE_BATCH = 512  # --lr_steps count iterations at this batch, as in the original


Plan = collections.namedtuple('Plan', [
    'manifest',         # the dataset manifest (data.manifest.load_manifest)
    'num_classes',
    'steps_per_epoch',
    'last_step',        # the global step training stops at
    'eval_sets',        # [(name, images uint8 [N,H,W,3], issame bool [N/2])]
    'device',
    'rank',             # this process's rank among world_size data-parallel workers
    'world_size',
    'loss_scaling',     # runtime.LossScaling, or None when gradients stay float32
    'cpu_bfloat16',     # the CPU trains in bfloat16 (runtime.cpu_bfloat16)
    'towers',           # in-graph tower devices (train_nets_mgpu.py); [] for one device
    'cluster',          # distributed.Cluster of TensorFlow gRPC workers, or None
    'lr_boundaries',    # learning-rate boundaries in global steps (lr_boundaries)
    'npu_options',      # npu_options.NpuOptions: precision mode, loop sinking, memory sizes
    'graph',            # train_graph.GraphSpec: what the training graph is built from
    'loop',             # trainer.LoopSpec: outputs, intervals, session options, the flags
    'ijb',              # evaluation.ijb_validation.IJBValidation (--eval_ijb), or None
    'best_metric',      # the validation set choosing <ckpt_path>/best; None: eval_sets[0]
    'head_blocks',      # blocks the margin head is split into: with --partial_fc every tower
                        # of every process holds one (block rank x towers + tower); else 1
], defaults=(None, None, 1))


def loop_spec(args):
    """The training loop's settings (trainer.LoopSpec) from train_nets.py's flags."""
    return trainer.LoopSpec(
        ckpt_path=args.ckpt_path, saver_maxkeep=args.saver_maxkeep,
        summary_path=args.summary_path, log_file_path=args.log_file_path,
        show_info_interval=args.show_info_interval, summary_interval=args.summary_interval,
        ckpt_interval=args.ckpt_interval, validate_interval=args.validate_interval,
        max_consecutive_overflows=args.max_consecutive_overflows,
        peer_timeout=args.peer_timeout,
        log_device_placement=args.log_device_mapping, num_threads=args.num_threads,
        flags=vars(args))


def graph_spec(args):
    """The training graph's settings (train_graph.GraphSpec) from train_nets.py's flags."""
    return train_graph.GraphSpec(
        net_depth=args.net_depth, net_width=width_for(args.norm, args.net_width), norm=args.norm,
        image_size=tuple(args.image_size),
        net_input_size=args.net_input_size, loss_type=args.loss_type,
        margin=train_graph.margin_args(args.loss_type, args.margin_m, args.margin_s,
                                       args.combine_margins),
        weight_decay=args.weight_decay, keep_prob=args.keep_prob, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size or args.batch_size, buffer_size=args.buffer_size,
        augmentation=train_graph.augmentation(args.augment, args.augment_strength,
                                              args.random_erase, args.image_size[1]),
        max_bad_records=args.max_bad_records, seed=args.seed, lr_values=args.lr_values,
        warmup_steps=args.warmup_steps, momentum=args.momentum,
        clip_gradient_norm=args.clip_gradient_norm,
        summary_histograms=args.summary_histograms, partial_fc=args.partial_fc,
        sample_rate=args.sample_rate)


def prepare(args):
    """Checks data, flags, the checkpoint to resume and the output folders before any work.

    Everything that would otherwise stop a run later is found here, before a
    graph is built: a verification set that cannot be scored (at the first
    validation), a checkpoint of another network (at the restore), an output
    folder that cannot be written (at the first log line or checkpoint).

    Raises:
      UsageError: with a message naming the file or flag and what was expected.
      CheckpointError: the checkpoint to resume does not fit the flags.
    """
    try:
        manifest = load_manifest(args.tfrecords_file_path)
    except ManifestError as error:
        raise UsageError('%s (or run the demo: make demo)' % error)
    data_size = tuple(manifest['image_size'])
    if data_size != tuple(args.image_size):
        raise UsageError('--image_size %d,%d does not match the data in %s, which holds %d,%d '
                         'images' % (args.image_size + (args.tfrecords_file_path,) + data_size))
    num_classes = args.num_output or manifest['num_classes']
    if num_classes < manifest['num_classes']:
        raise UsageError('--num_output %d is smaller than the %d identities of %s'
                         % (num_classes, manifest['num_classes'], args.tfrecords_file_path))
    try:
        device = runtime.select_device(args.device)
        scaling = runtime.loss_scaling(
            device, args.precision_mode, args.mixed_precision, args.loss_scale,
            args.init_loss_scale, args.incr_every_n_steps, args.decr_every_n_nan_or_inf,
            args.decr_ratio)
        bfloat16 = runtime.cpu_bfloat16(device, args.mixed_precision)
        npu = npu_options.make(args.precision_mode, args.iterations_per_loop,
                               args.graph_memory_max_size, args.variable_memory_max_size)
        runtime.check_device_options(device, scaling, npu.iterations_per_loop)
    except ValueError as error:
        raise UsageError(str(error))
    towers = _towers(args, device)
    cluster = _tf_cluster(args, device)
    rank, world_size = (cluster.rank, len(cluster.hosts)) if cluster else _hccl_ranks(device)
    steps_per_epoch = manifest['num_images'] // (args.batch_size * world_size)
    if steps_per_epoch < 1:
        raise UsageError('--batch_size %d is larger than the %d images of %s'
                         % (args.batch_size, manifest['num_images'], args.tfrecords_file_path))
    head_blocks = (len(towers) or 1) * world_size if args.partial_fc else 1
    _check_partial_fc(args, num_classes, head_blocks, args.batch_size * world_size)
    lr_boundaries_ = lr_boundaries(args.lr_steps, args.batch_size * world_size)
    last_step = steps_per_epoch * args.epoch
    if args.max_steps is not None:
        last_step = min(last_step, args.max_steps)
    loop = npu.iterations_per_loop
    if last_step % loop:  # the epochs' end (--max_steps is a multiple, train_nets.check_args)
        last_step += loop - last_step % loop
    eval_sets = [(name, images, issame) for name, _, images, issame in verification_sets.load(
        verification_sets.find(args.eval_db_path, args.eval_datasets), args.image_size)]
    ijb = None
    if args.eval_ijb and rank == 0:  # the chief validates
        try:
            ijb = IJBValidation.load(args.eval_ijb, args.eval_ijb_target, args.eval_ijb_workers)
        except IJBFormatError as error:
            raise UsageError('--eval_ijb: %s' % error)
    latest = checkpoint_names.latest_in_folder(args.ckpt_path) if os.path.isdir(
        args.ckpt_path) else None
    if latest:
        checkpoint_utils.check_training_resume(latest, args.net_depth, args.loss_type,
                                               num_classes, width_for(args.norm, args.net_width),
                                               args.norm,
                                               args.net_input_size or args.image_size,
                                               head_blocks=head_blocks)
    if rank == 0:  # the chief writes every output; created last, once all else is known good
        _check_output_folders(args.ckpt_path, args.summary_path, args.log_file_path)
    return Plan(manifest, num_classes, steps_per_epoch, last_step, eval_sets, device, rank,
                world_size, scaling, bfloat16, towers, cluster, lr_boundaries_, npu, graph_spec(args),
                loop_spec(args), ijb, args.best_metric, head_blocks)


def _check_partial_fc(args, num_classes, num_blocks, global_batch):
    """Refuses --partial_fc / --sample_rate settings this layout cannot train (UsageError)."""
    if not args.partial_fc:
        if args.sample_rate != 1.0:
            raise UsageError('--sample_rate %g samples the blocks of a sharded head; add '
                             '--partial_fc True' % args.sample_rate)
        return
    if num_classes < num_blocks:
        raise UsageError('--partial_fc True: %d classes cannot be split over %d devices'
                         % (num_classes, num_blocks))
    problem = partial_fc.sampling_problem(args.sample_rate, num_classes, num_blocks,
                                          global_batch)
    if problem:
        raise UsageError('--sample_rate %g: %s' % (args.sample_rate, problem))


def _check_output_folders(ckpt_path, summary_path, log_file_path):
    """Creates the output folders (and ckpt_path/best) and checks that they can be written."""
    for path, flag in ((ckpt_path, '--ckpt_path'), (os.path.join(ckpt_path, BEST_SUBDIR),
                                                    '--ckpt_path'),
                       (summary_path, '--summary_path'), (log_file_path, '--log_file_path')):
        cli_flags.check_output_folder(path, flag)


def _hccl_ranks(device):
    """(rank, world_size) of an NPU process started per device with HCCL's env; else (0, 1)."""
    if device != 'npu':
        return 0, 1
    try:
        return hccl_environment.hccl_ranks()
    except ValueError as error:
        raise UsageError(str(error))


def _towers(args, device):
    """The tower devices of train_nets_mgpu.py's --num_gpus/--devices ([] for train_nets.py)."""
    try:
        towers = parallel.resolve_devices(args.num_gpus, args.devices)
    except ValueError as error:
        raise UsageError(str(error))
    if towers and device == 'npu':
        raise UsageError('in-graph towers run on GPUs or CPUs; on Ascend NPUs start one '
                         'process per device with HCCL (RANK_SIZE, RANK_ID, ...; see docs/ascend.md)')
    if towers and args.batch_size % len(towers):
        raise UsageError('--batch_size %d is not divisible by the %d tower devices (%s)'
                         % (args.batch_size, len(towers), ','.join(towers)))
    return towers


def _tf_cluster(args, device):
    """The TensorFlow gRPC cluster of --worker_hosts/--task_index or TF_CONFIG, or None."""
    try:
        cluster = distributed.parse_cluster(args.worker_hosts, args.task_index)
    except ValueError as error:
        raise UsageError(str(error))
    if cluster is not None and device == 'npu':
        raise UsageError('--worker_hosts/TF_CONFIG: TensorFlow\'s gRPC collectives do not run '
                         'on the NPU; start one process per device with HCCL (RANK_SIZE, '
                         'RANK_ID, ...; see docs/ascend.md)')
    return cluster


def lr_boundaries(lr_steps, global_batch):
    """The learning-rate boundaries in global steps, by the original's arithmetic.

    --lr_steps count iterations at batch 512; the original multiplies them by
    int(512 / batch_size), the integer factor taken first (batch 136: 3 x 40000
    = 120000, not 150588). `global_batch` is the batch of one step over all
    devices (towers and workers together). Above 512 the original's factor is
    0 and every boundary would be 0; there the factor is 512 / batch, rounded
    per boundary.
    """
    factor = REFERENCE_BATCH // global_batch
    if factor >= 1:
        return [factor * step for step in lr_steps]
    return [max(1, int(round(step * REFERENCE_BATCH / float(global_batch)))) for step in lr_steps]
