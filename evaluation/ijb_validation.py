"""IJB-B / IJB-C 1:1 verification at training time (train_nets.py --eval_ijb).

The same protocol as eval_ijb.py (ijb_protocol.verify, insightface's defaults: flip,
norm score, detector score), run on the training session's own inference graph at each
validation. The release is read and checked once, before training starts; its images
are decoded and aligned again at each validation (IJB-C's crops would take 17.6 GB to
keep) by worker processes started before the session, so they are forked from a
process without TensorFlow's thread pools and live, idle, between validations.

The log lines, beside the .bin sets' `[lfw][2000]Accuracy-Flip: ...`:

    [ijbc][2000]TAR@FAR=1e-5: 0.90123
    [ijbc][2000]TAR@FAR=1e-4: 0.93512

TAR as a fraction, at the two FARs papers quote (every FAR goes to TensorBoard).

Typical use:
    ijb = IJBValidation.load('/data/IJB_release/IJBC', 'IJBC', num_workers=2)
    with ijb:                            # the workers: start before tf.Session
        tars = ijb.score(run_batch, 64)  # at each validation
        ijb.log_result(step, tars, logging.getLogger())
"""
from evaluation import ijb_embed, ijb_meta, ijb_protocol
from evaluation.ijb_report import FAR_LABELS

LOGGED_FARS = ('1e-5', '1e-4')  # the columns papers quote, e.g. "IJB-C(1E-4)"
CHOOSING_FAR = '1e-4'           # the TAR --best_metric <ijbc|ijbb> compares


class ValidationError(RuntimeError):
    """The evaluation could not finish (a worker process died); one line."""


class IJBValidation(object):
    """One release, checked; its worker processes while training runs."""

    def __init__(self, ijb_root, target, meta, num_workers):
        self.ijb_root = ijb_root
        self.target = target
        self.meta = meta
        self.name = target.lower()  # the set's name in log lines, summaries, --best_metric
        self._num_workers = num_workers
        self._pool = None

    @classmethod
    def load(cls, ijb_root, target, num_workers):
        """Reads and checks the release.

        Raises:
          IJBFormatError: a missing or malformed meta file, a missing image, pairs of one
            class only; one line naming the file and line.
        """
        meta = ijb_meta.read_meta(ijb_root, target)
        ijb_meta.check_scorable(meta, ijb_root, target)
        return cls(ijb_root, target, meta, num_workers)

    def start(self):
        """Starts the worker processes (call before any tf.Session exists)."""
        if self._pool is None:
            self._pool = ijb_embed.CropPool(self._num_workers)

    def score(self, run_batch, batch_size):
        """Embeds the release and computes TAR@FAR with insightface's default mode.

        Args:
          run_batch: fn(uint8 [batch_size, 112, 112, 3] BGR) -> float [batch_size, D].
          batch_size: the static batch of run_batch.
        Returns:
          {far label ('1e-6' ... '1e-1'): TAR as a fraction}.
        Raises:
          IJBFormatError: an image that does not decode (named with its 5pts line).
          ValidationError: a worker process died.
        """
        self.start()
        try:
            embeddings, flipped = ijb_embed.embed_release(
                self.ijb_root, self.meta, ijb_meta.meta_path(self.ijb_root, self.target,
                                                             ijb_meta.LANDMARKS),
                run_batch, batch_size, self._pool, mirror=True,
                label='validation on %s' % self.target)
        except ijb_embed.WorkerError as error:
            raise ValidationError('%s validation: %s' % (self.target, error))
        verified = ijb_protocol.verify(self.meta, embeddings, flipped)
        return dict(zip(FAR_LABELS, [float(tar) for tar in verified.tars]))

    def log_result(self, step, tars, logger):
        for label in LOGGED_FARS:
            logger.info('[%s][%d]TAR@FAR=%s: %1.5f', self.name, step, label, tars[label])

    def summary_values(self, tars):
        """{tag: value} for TensorBoard, e.g. 'ijbc/TAR@FAR=1e-4'."""
        return {'%s/TAR@FAR=%s' % (self.name, label): value for label, value in tars.items()}

    def close(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *unused_error):
        self.close()
