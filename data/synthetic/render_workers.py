"""Rendering synthetic faces in chunks, in this process or in forked worker processes."""
import multiprocessing

from data.synthetic import render
from data.synthetic.jpeg_encoder import ENCODE_BATCH


class Renderer(object):
    """Renders item lists in chunks, in this process or in worker processes.

    Calling it with (stream, items) yields (chunk, uint8 [n, H, W, 3] BGR) in
    order. Every image has its own seed, so the output does not depend on the
    number of workers.
    """

    def __init__(self, seed, image_size, num_workers):
        self._seed, self._size = seed, image_size
        self._pool = None
        if num_workers > 1:
            # fork: workers only run numpy (data/synthetic); they never touch TF.
            context = multiprocessing.get_context('fork')
            self._pool = context.Pool(num_workers)

    def __call__(self, stream, items):
        chunks = [items[i:i + ENCODE_BATCH] for i in range(0, len(items), ENCODE_BATCH)]
        tasks = [(self._seed, stream, chunk, self._size) for chunk in chunks]
        if self._pool is None:
            results = (render.render_images(*task) for task in tasks)
        else:
            results = self._pool.imap(_render_task, tasks)
        for chunk, images in zip(chunks, results):
            yield chunk, images

    def close(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def _render_task(task):
    return render.render_images(*task)
