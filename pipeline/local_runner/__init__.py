"""Fixes for Beam 2.77's local runners, used only there.

Faults of the local streaming runner (BundleBasedDirectRunner) make a local streaming run
wrong or sluggish, and none has a public switch, so they are patched for the duration of a
run:

* it reads Pub/Sub with a 30 s long poll on its only thread, so while a subscription is
  idle nothing else runs (timers, the watermark, cancel) for up to 30 s at a time
  (`pubsub`);
* it pulls at most 10 messages per bundle, and every bundle pays the whole per-bundle cost
  of every stage (the runner pickles, sets up and tears down each DoFn per bundle), which
  capped a run below 100 events/s (`pubsub`);
* it inspects every DoFn's method signatures again for each bundle (to find state and timer
  specs), which took about a third of a local run's time (`dofns`);
* between any two bundles it looks through the timers of every key it ever held, so the
  more devices a run has seen (within the identity TTL) the slower it gets (`timers`);
* it keeps the metrics container of each step's first bundle, so counters stop growing
  after the first bundle and the run report undercounts (`metrics`);
* it copies a key's state with `copy.deepcopy` each time a bundle first touches the key,
  timers included, which was a tenth of a busy run's time (`state`);
* it turns every pulled Pub/Sub message into proto-plus wrappers and a `datetime` before it
  keeps only the payload and the publish time, another tenth; and for every pull it parses
  the run's flags again to find the subscription's project (`pubsub`);
* it runs every step on every bundle of its input, empty ones too, and every bundle of a
  step makes one for each of its outputs, so a branch that rarely gets anything (the dead
  letters) ran on every bundle (`steps`);
* it works on one thread, and pulls again only once every step is idle, so while the sink
  waits for Woopra's answers nothing is pulled, buffered or flushed: under a steady stream
  that thread was busy nine tenths of the time, almost half of it waiting in the sink
  (`steps`).

It also has no drain, only cancel, which drops whatever was pulled (the runner acknowledges
messages as it pulls them): `LocalStreamingRun.drain()` (`run`) stops pulling (`pubsub`) and
lets the run finish as Dataflow's drain does. And Python's garbage collector walked the whole
heap a streaming run holds for good on every full collection, about an eighth of a busy
run's time (`memory` freezes it). Each fix is a context manager in the module named beside
its fault; `local_streaming_fixes` applies them all for as long as a run lasts.

The local batch runner (FnApiRunner) holds every value of a GroupByKey as its own small
block until the group is complete, then encodes them all into one stream and frees them;
the C allocator keeps the freed blocks (they lie among blocks still in use), so the run's
memory stays at the blocks' size on top of the streams that follow.
`returned_shuffle_memory` (`memory`) hands the free pages back to the system once each
shuffle is encoded (glibc `malloc_trim`; elsewhere it does nothing).

Dataflow and other runners never touch this code. Beam is pinned below 2.78 for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pipeline.local_runner.dofns import cached_dofn_specs, dofn_copies_from_one_pickle
from pipeline.local_runner.memory import long_lived_heap_frozen, returned_shuffle_memory
from pipeline.local_runner.metrics import per_bundle_metrics
from pipeline.local_runner.pubsub import (
    DEFAULT_PULL_MAX_MESSAGES,
    drainable_pubsub_reads,
    short_pubsub_pulls,
    subscriptions_found_once,
)
from pipeline.local_runner.run import LocalStreamingRun
from pipeline.local_runner.state import cheap_state_copies
from pipeline.local_runner.steps import no_steps_for_empty_bundles, pipelined_steps
from pipeline.local_runner.timers import indexed_timer_looks, spaced_timer_scans

__all__ = [
    "DEFAULT_PULL_MAX_MESSAGES",
    "LocalStreamingRun",
    "local_streaming_fixes",
    "returned_shuffle_memory",
]


@contextlib.contextmanager
def local_streaming_fixes(
    pull_max_messages: int = DEFAULT_PULL_MAX_MESSAGES,
) -> Iterator[LocalStreamingRun]:
    """All fixes, for as long as the block runs; yields the handle that drains the run."""
    run = LocalStreamingRun()
    with (
        short_pubsub_pulls(max_messages=pull_max_messages),
        subscriptions_found_once(),
        drainable_pubsub_reads(run),
        cached_dofn_specs(),
        dofn_copies_from_one_pickle(),
        spaced_timer_scans(run),
        per_bundle_metrics(),
        cheap_state_copies(),
        indexed_timer_looks(),
        long_lived_heap_frozen(),
        pipelined_steps(),
        no_steps_for_empty_bundles(),
    ):
        yield run
