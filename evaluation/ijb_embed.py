"""Embeddings of every image of an IJB release, streamed: decode and align in worker
processes while the network runs, never the whole set's pixels in memory.

IJB-C has 469,375 images. Each is read (cv2.imread) and aligned onto ArcFace's 112x112
template (evaluation.ijb_align) in worker processes; the main process puts the crops into
fixed-size batches and runs each batch and its horizontal mirror through the network (a
static batch: the last one is padded with black crops, whose embeddings are dropped).
What stays in memory is the embeddings, float32 [N, D] for the crops and as much for the
mirrors: for IJB-C at D = 512, 2 x 469,375 x 512 x 4 B = 1.9 GB, plus the crops in
flight (37 KB each): at most AHEAD_CHUNKS chunks of CHUNKSIZE per worker.

The workers are forked (they run OpenCV and numpy only, never TensorFlow; spawned where
fork does not exist). Each has its own pipe: chunk k of the image list goes to worker
k mod W and its crops come back in the same order, so results arrive in file order
with no shared queue. multiprocessing.Pool is not used because its terminate() hangs
when a worker dies while holding the shared task queue's lock, as a `kill` of the whole
process group makes it do (seen with Python 3.11). Ctrl-C reaches the parent alone (the
workers ignore SIGINT); the parent then ends the workers (SIGTERM, SIGKILL after
JOIN_SECONDS), as it does on any error, and a worker whose parent is gone exits by itself.

Typical use:
    with CropPool(num_workers=2) as pool:
        embeddings, flipped = embed_release(root, meta, landmark_path, run_batch, 64, pool)
"""
import itertools
import multiprocessing
import os
import signal

import numpy as np

from data.progress import ProgressBar
from evaluation import ijb_align, ijb_meta
from evaluation.ijb_meta import IJBFormatError

CHUNKSIZE = 8       # images a worker reads and aligns per message
AHEAD_CHUNKS = 4    # chunks sent to each worker ahead of the ones the network has used
JOIN_SECONDS = 5.0  # how long a terminated worker may take before it is killed
_POLL_SECONDS = 0.5


class WorkerError(RuntimeError):
    """A worker process died (e.g. killed, or out of memory); one line."""


def default_workers():
    """The cores this process may run on (os.sched_getaffinity where it exists)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _start_method():
    """'fork' where it exists (no re-import of the caller in each worker), else 'spawn'."""
    return 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'


def crop_task(task):
    """(index, path, landmarks [5, 2]) -> (index, uint8 [112, 112, 3] BGR crop or None,
    None or why the image could not be read or aligned)."""
    index, path, landmarks = task
    try:
        crop = ijb_align.align(ijb_align.read_image(path), landmarks)
    except ValueError as error:  # IJBFormatError: no image; ValueError: degenerate landmarks
        return index, None, str(error)
    return index, crop, None


def _worker_main(connection, parent):
    """A worker: receives lists of tasks, sends back the lists of their results.

    It leaves Ctrl-C to the parent, dies quietly on the parent's SIGTERM (which a forked
    worker would otherwise handle as the parent does), uses one OpenCV thread (the
    workers are the parallelism), and exits when the parent closes its pipe or is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import cv2
    cv2.setNumThreads(1)
    while True:
        while not connection.poll(_POLL_SECONDS):
            if os.getppid() != parent:
                return
        try:
            tasks = connection.recv()
        except EOFError:
            return
        if tasks is None:
            return
        connection.send([crop_task(task) for task in tasks])


def _died(process):
    process.join(JOIN_SECONDS)
    return WorkerError('image worker process %s (pid %d) died (exit code %s)'
                       % (process.name, process.pid, process.exitcode))


class CropPool(object):
    """The worker processes that read and align images; a context manager that ends
    them however its block is left.

    num_workers 0 reads and aligns in this process, between the network's batches.
    """

    def __init__(self, num_workers):
        self.num_workers = num_workers
        self._workers = []  # (process, the parent's end of its pipe)
        if num_workers <= 0:
            return
        context = multiprocessing.get_context(_start_method())
        try:
            for k in range(num_workers):
                mine, theirs = context.Pipe()
                process = context.Process(target=_worker_main, args=(theirs, os.getpid()),
                                          name='ijb-crops-%d' % k, daemon=True)
                process.start()
                theirs.close()
                self._workers.append((process, mine))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self):
        return [process.pid for process, _ in self._workers]

    def imap(self, tasks):
        """Yields crop_task(task) for each task, in order.

        Raises:
          WorkerError: a worker died.
        """
        if not self._workers:
            for task in tasks:
                yield crop_task(task)
            return
        tasks = iter(tasks)
        count = len(self._workers)
        sent = received = 0
        for _ in range(AHEAD_CHUNKS * count):
            sent += self._send(sent, tasks)
        while received < sent:
            results = self._receive(received)
            received += 1
            sent += self._send(sent, tasks)
            for result in results:
                yield result

    def _send(self, number, tasks):
        """Sends the next chunk (chunk `number`) to its worker; 1 if there was one, else 0."""
        chunk = list(itertools.islice(tasks, CHUNKSIZE))
        if not chunk:
            return 0
        process, connection = self._workers[number % len(self._workers)]
        try:
            connection.send(chunk)
        except OSError:  # BrokenPipeError: the worker is gone
            raise _died(process)
        return 1

    def _receive(self, number):
        process, connection = self._workers[number % len(self._workers)]
        while not connection.poll(_POLL_SECONDS):
            if not process.is_alive():
                raise _died(process)
        try:
            return connection.recv()
        except (EOFError, OSError):
            raise _died(process)

    def close(self):
        """Ends the workers: SIGTERM, then SIGKILL for one still alive after JOIN_SECONDS."""
        for process, _ in self._workers:
            if process.is_alive():
                process.terminate()
        for process, connection in self._workers:
            process.join(JOIN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *unused_error):
        self.close()


def _tasks(ijb_root, meta):
    for index, (name, landmarks) in enumerate(zip(meta.image_names, meta.landmarks)):
        yield index, ijb_meta.image_file(ijb_root, name), landmarks


def embed_release(ijb_root, meta, landmark_path, run_batch, batch_size, pool, mirror=True,
                  label='embedding'):
    """Embeds every image of the release, and its mirror, in the 5pts file's order.

    Args:
      ijb_root: the release folder (loose_crop/ inside).
      meta: ijb_meta.IJBMeta of the release.
      landmark_path: the 5pts file (named with the line of an image that fails).
      run_batch: fn(uint8 [batch_size, 112, 112, 3] BGR) -> float [batch_size, D], the
        network's raw (unnormalised) embeddings.
      batch_size: the network's static batch.
      pool: a CropPool.
      mirror: also embed each crop's horizontal mirror.
      label: the progress bar's text.
    Returns:
      (embeddings float32 [N, D], flipped float32 [N, D] or None without mirror).
    Raises:
      IJBFormatError: an image that does not decode or whose landmarks fit no
        alignment, naming the file and its line in the 5pts file.
      WorkerError: a worker process died.
    """
    count = len(meta.image_names)
    height, width = ijb_align.CROP_SIZE
    batch = np.zeros((batch_size, height, width, 3), np.uint8)
    embeddings = flipped = None
    start = filled = 0
    with ProgressBar(count, label, unit='images') as bar:
        for index, crop, problem in pool.imap(_tasks(ijb_root, meta)):
            if problem is not None:
                raise IJBFormatError('%s:%d: %s' % (landmark_path, meta.image_lines[index],
                                                    problem))
            batch[filled] = crop
            filled += 1
            if filled < batch_size and index < count - 1:
                continue
            batch[filled:] = 0
            outputs = [_run(run_batch, batch, batch_size)]
            if mirror:
                outputs.append(_run(run_batch, batch[:, :, ::-1], batch_size))
            if embeddings is None:
                embeddings = np.empty((count, outputs[0].shape[1]), np.float32)
                flipped = np.empty_like(embeddings) if mirror else None
            for whole, output in zip((embeddings, flipped), outputs):
                whole[start:start + filled] = output[:filled]
            bar.update(filled)
            start += filled
            filled = 0
    if start != count:
        raise RuntimeError('embedded %d of %d images' % (start, count))
    return embeddings, flipped


def _run(run_batch, batch, batch_size):
    output = np.asarray(run_batch(np.ascontiguousarray(batch)))
    if output.ndim != 2 or output.shape[0] != batch_size:
        raise RuntimeError('the network returned shape %s for a batch of %d'
                           % (output.shape, batch_size))
    return output
