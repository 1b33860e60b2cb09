"""Each bundle's copy of a key's state, made without `copy.deepcopy`."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from apache_beam.transforms.trigger import InMemoryUnmergedState


@contextlib.contextmanager
def cheap_state_copies() -> Iterator[None]:
    """Copy a key's state for a bundle without `copy.deepcopy`.

    The runner copies a key's whole state when a bundle first touches it, so that a failed
    bundle leaves no trace. Timers are `{window: {(name, domain, tag): Timestamp}}`, all
    immutable but the dicts, so copying the dicts is a deep copy; state lists are copied one
    level deep as before, and anything in the global state still goes through deepcopy.
    """
    original = InMemoryUnmergedState.__dict__["copy"]

    def copied(self):
        clone = InMemoryUnmergedState(defensive_copy=self.defensive_copy)
        for window, timers in self.timers.items():
            clone.timers[window] = dict(timers)
        if self.global_state:
            clone.global_state = copy.deepcopy(self.global_state)
        for window, states in self.state.items():
            cloned = clone.state[window]
            for tag, value in states.items():
                cloned[tag] = copy.copy(value)
        return clone

    InMemoryUnmergedState.copy = copied
    try:
        yield
    finally:
        InMemoryUnmergedState.copy = original
