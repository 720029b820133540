"""Stopping the training loop: on a signal, and together when there are several processes.

A signal must not kill a step half-way (the loop saves a checkpoint after
the step it was in), and with several processes every one must stop after
the same step, or the others wait for it in the next all-reduce.
"""
import contextlib
import signal

from devices import distributed


class Interrupted(Exception):
    """A signal during validation: raised by StopRequest to abandon it."""


class StopRequest(object):
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step.

    With several processes (graph['stop_vote']: HCCL ranks or gRPC workers)
    a signal, or this process's input failing, is stored as a vote before
    the next step, and every process reads the same agreed reasons from that
    step's result (distributed.shared_stop), so all stop after the same step.
    Validation can take minutes, longer than a scheduler's grace period
    before SIGKILL: inside `interruptible()` a signal also raises
    Interrupted (one process only; several must stop together).
    """

    def __init__(self, graph):
        self.signum = None          # the loop stops when set
        self.received = None        # a signal to this process
        self.input_failed = False   # agreed: some process's input failed
        self.non_finite = False     # agreed: some process's loss was not finite
        self._vote = graph.get('stop_vote')
        self._voted = None
        self._interruptible = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, unused_frame):
        self.received = signum
        if self._vote is None:
            self.signum = signum
            if self._interruptible:
                self._interruptible = False
                raise Interrupted()

    @contextlib.contextmanager
    def interruptible(self):
        """A block (read-only work: validation) that a signal abandons."""
        if self.signum is not None:
            raise Interrupted()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def vote(self, sess, input_failed):
        """Stores this process's reasons to stop, for the next step to share (several only)."""
        if self._vote is None:
            return
        votes = distributed.vote_values(self._vote, self.received, input_failed)
        if votes != self._voted:
            sess.run(self._vote.set_votes, {self._vote.request: votes})
            self._voted = votes

    def agree(self, values):
        """Reads the step's agreed reasons (several processes only)."""
        if self._vote is None:
            return
        agreed = distributed.read_agreement(self._vote, values['stop_votes'])
        signals = [reason for reason, voted in agreed.items()
                   if voted and isinstance(reason, int)]
        if signals and self.signum is None:
            self.signum = max(signals)
        self.input_failed = agreed[distributed.INPUT_FAILED]
        self.non_finite = agreed[distributed.NON_FINITE_LOSS]
