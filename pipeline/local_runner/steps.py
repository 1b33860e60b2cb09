"""How the local streaming runner schedules its steps: on two threads, each step's bundles one
at a time and in order, and no step for a bundle that holds nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from apache_beam.runners.direct import executor, transform_evaluator

# Executor threads: while one waits in a step (the sink's finish_bundle waits for Woopra's
# answers), the other carries the steps before it on; the monitor task takes turns on them.
_EXECUTOR_THREADS = 2
# The longest the monitor idles, when no step has reported, before it looks again.
_MONITOR_IDLE_SECONDS = 0.05


class _WakeUp(executor._ExecutorService.CallableTask):
    """A task that only wakes an idle executor thread, so that it sees a shutdown at once."""

    def call(self, state_sampler) -> None:
        pass


@contextlib.contextmanager
def pipelined_steps(threads: int = _EXECUTOR_THREADS) -> Iterator[None]:
    """Let the steps of a run work at the same time, each on its bundles one at a time, in order.

    `threads` executor threads share the steps. Every step takes its bundles one at a time
    and in the order they came (Beam does that only for stateful steps, and takes the newest
    first), so each device's events keep their order from step to step. The read pulls again
    as soon as at most one bundle is in progress or waiting anywhere, so a run holds at most
    about one pull beyond the bundle being sent, which a drain still delivers.
    """
    parallel = executor._ExecutorServiceParallelExecutor
    serial = executor._SerialEvaluationState
    registry = transform_evaluator.TransformEvaluatorRegistry
    monitor = parallel._MonitorTask
    updates = parallel._TypedUpdateQueue
    original_threads = parallel.__dict__["NUM_WORKERS"]
    original_serial_init = serial.__dict__["__init__"]
    original_next_work = serial.__dict__["_update_currently_evaluating"]
    original_serially = registry.__dict__["should_execute_serially"]
    original_call = monitor.__dict__["call"]
    original_fire_timers = monitor.__dict__["_fire_timers"]
    original_should_shutdown = monitor.__dict__["_should_shutdown"]
    original_add_work = monitor.__dict__["_add_work_if_necessary"]
    original_offer = updates.__dict__["offer"]
    service = executor._ExecutorService
    original_shutdown = service.__dict__["shutdown"]
    serial_states: list[executor._SerialEvaluationState] = []
    reported = threading.Event()

    def shutdown(self) -> None:
        original_shutdown(self)
        # An idle thread waits on the queue up to 5 s at a time before it sees the request,
        # and the run ends only once every thread has.
        for _ in self.workers:
            self.queue.put(_WakeUp())

    def serial_init(self, executor_service, scheduled) -> None:
        original_serial_init(self, executor_service, scheduled)
        serial_states.append(self)

    def next_work_in_order(self, new_work, completed_work) -> None:
        with self._lock:
            if new_work:
                self.serial_queue.append(new_work)
            if completed_work:
                assert self.currently_evaluating == completed_work
                self.currently_evaluating = None
            if self.serial_queue and not self.currently_evaluating:
                self.currently_evaluating = self.serial_queue.popleft()
                executor._TransformEvaluationState.schedule(self, self.currently_evaluating)

    def offer(self, item) -> None:
        original_offer(self, item)
        reported.set()

    def call(self, state_sampler) -> None:
        # Without the wait the monitor would take every turn a free thread gives it.
        own = self._executor
        if own.all_updates._queue.empty() and own.executor_service.queue.empty():
            reported.wait(_MONITOR_IDLE_SECONDS)
        reported.clear()
        original_call(self, state_sampler)

    def fire_timers(self) -> bool:
        # Fired timers leave their keys' state only when their bundle commits, so a look
        # while a bundle of fired timers is in progress or waiting would fire them again.
        if any(work._fired_timers for work in bundles_in_progress(self)):
            return False
        return original_fire_timers(self)

    def should_shutdown(self) -> bool:
        # A bundle finished on the other thread may have results the monitor has not read.
        if self._is_executing() or not self._executor.all_updates._queue.empty():
            return False
        return original_should_shutdown(self)

    def bundles_in_progress(self) -> list[executor.TransformExecutor]:
        # The queues first, each under its lock, then the scheduled set: a bundle leaves its
        # queue for the set under that lock, so it is seen in one or the other.
        queued: list[executor.TransformExecutor] = []
        for state in list(serial_states):
            with state._lock:
                queued.extend(state.serial_queue)
        return queued + list(self._executor.transform_executor_services.executors)

    def add_work_if_necessary(self, timers_fired: bool) -> None:
        if timers_fired or len(bundles_in_progress(self)) > 1:
            return
        own = self._executor
        for applied_ptransform in own.all_nodes:
            if own.evaluation_context.is_done(applied_ptransform):
                continue
            pending = own.node_to_pending_bundles.get(applied_ptransform, [])
            own.node_to_pending_bundles[applied_ptransform] = []
            for bundle in pending:
                own.schedule_consumption(
                    applied_ptransform, bundle, [], own.default_completion_callback
                )

    parallel.NUM_WORKERS = threads
    service.shutdown = shutdown
    serial.__init__ = serial_init
    serial._update_currently_evaluating = next_work_in_order
    registry.should_execute_serially = lambda self, applied_ptransform: True
    monitor.call = call
    monitor._fire_timers = fire_timers
    monitor._should_shutdown = should_shutdown
    monitor._add_work_if_necessary = add_work_if_necessary
    updates.offer = offer
    try:
        yield
    finally:
        parallel.NUM_WORKERS = original_threads
        service.shutdown = original_shutdown
        serial.__init__ = original_serial_init
        serial._update_currently_evaluating = original_next_work
        registry.should_execute_serially = original_serially
        monitor.call = original_call
        monitor._fire_timers = original_fire_timers
        monitor._should_shutdown = original_should_shutdown
        monitor._add_work_if_necessary = original_add_work
        updates.offer = original_offer


@contextlib.contextmanager
def no_steps_for_empty_bundles() -> Iterator[None]:
    """Give no step a bundle that holds nothing.

    A bundle of a step makes one bundle for each of the step's outputs, empty or not, and the
    runner runs every consumer on each of them: the dead-letter branch's nine steps ran on
    every bundle of the steps that can dead-letter, about a tenth of a steady run's CPU, for
    nothing. Beam's own watermark manager already leaves empty bundles out ("They do not
    impact watermarks and should not trigger downstream execution"). Fired timers travel in
    empty bundles too, but are scheduled directly, not as an output's consumers.
    """
    parallel = executor._ExecutorServiceParallelExecutor
    original = parallel.__dict__["schedule_consumers"]

    def schedule_consumers(self, committed_bundle) -> None:
        if committed_bundle.has_elements():
            original(self, committed_bundle)

    parallel.schedule_consumers = schedule_consumers
    try:
        yield
    finally:
        parallel.schedule_consumers = original
