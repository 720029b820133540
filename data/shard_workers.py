"""Where a conversion's shard tasks run: in this process, or in spawned worker processes
that report their progress through a shared counter and their shards through a queue."""
import multiprocessing
import pickle
import queue
import signal

from data.shard_records import ConversionError


def run_here(tasks, write_shard, tracker):
    """Writes the shards one after the other in this process; returns their ShardResults."""
    return [write_shard(task, tracker.update) for task in tasks]


_worker = {}  # state of a worker process: its progress counter


def _report_to_counter(count):
    with _worker['counter'].get_lock():
        _worker['counter'].value += count


def _picklable(error):
    """`error` if it survives the queue to the parent, else a ConversionError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # pylint: disable=broad-except
        return ConversionError('%s: %s' % (type(error).__name__, error))


def _worker_main(write_shard, tasks, counter, messages):
    """Writes `tasks` (consecutive shards) in a worker process.

    Sends ('done', ShardResult) per shard, or ('error', exception) and stops.
    """
    # Ctrl-C reaches the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker['counter'] = counter
    try:
        for task in tasks:
            messages.put(('done', write_shard(task, _report_to_counter)))
    except Exception as error:  # pylint: disable=broad-except
        messages.put(('error', _picklable(error)))


def run_workers(tasks, write_shard, num_workers, tracker, name):
    """Runs the tasks in `num_workers` spawned processes, each on consecutive shards.

    Spawned, not forked: forking a process that may already run TensorFlow is
    unsafe. Each worker imports TensorFlow once (a few seconds, in parallel).
    """
    context = multiprocessing.get_context('spawn')
    counter = context.Value('q', 0)
    messages = context.Queue()
    workers = []
    for index in range(num_workers):
        share = tasks[index * len(tasks) // num_workers:(index + 1) * len(tasks) // num_workers]
        workers.append(context.Process(target=_worker_main,
                                       args=(write_shard, share, counter, messages),
                                       name='%s-%d' % (name, index), daemon=True))
    results = {}
    shown = [0]  # the tracker counts increments; the shared counter holds the total

    def catch_up():
        done = counter.value
        tracker.update(done - shown[0])
        shown[0] = done

    try:
        for worker in workers:
            worker.start()
        while len(results) < len(tasks):
            try:
                kind, value = messages.get(timeout=0.2)
            except queue.Empty:
                # A worker killed from outside (e.g. out of memory) sends nothing.
                for worker in workers:
                    if worker.exitcode not in (None, 0):
                        raise ConversionError('worker process %s died with exit code %d'
                                              % (worker.name, worker.exitcode))
            else:
                if kind == 'error':
                    raise value
                results[value.path] = value
            catch_up()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    catch_up()  # a worker counts its last images before it reports its shard done
    return [results[task.path] for task in tasks]
