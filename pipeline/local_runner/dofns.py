"""A DoFn inspected once a run for its state and timer specs, and each bundle's copy of it
made from one pickle."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

from apache_beam.internal import pickler
from apache_beam.runners.direct import transform_evaluator
from apache_beam.transforms import core, userstate


def specs_cache_key(dofn) -> object | None:
    """What a DoFn's state and timer specs depend on: its class, or a wrapped function's code.

    None when that is not enough to tell (a wrapped callable with default arguments).
    """
    if not isinstance(dofn, core.CallableWrapperDoFn):
        return type(dofn)
    code = getattr(dofn._fn, "__code__", None)
    if code is None or dofn._fn.__defaults__ or dofn._fn.__kwdefaults__:
        return None
    return type(dofn), code


@contextlib.contextmanager
def cached_dofn_specs() -> Iterator[None]:
    """Inspect each DoFn class once for its state and timer specs, not once per bundle.

    The specs are declared on the class (parameter defaults of its methods), so every copy
    of a DoFn has the same; the runner copies each DoFn per bundle and asks again each time.
    """
    original = userstate.get_dofn_specs
    cache: dict[object, tuple] = {}

    def get_dofn_specs(dofn):
        key = specs_cache_key(dofn)
        if key is None:
            return original(dofn)
        specs = cache.get(key)
        if specs is None:
            specs = cache[key] = original(dofn)
        return specs

    userstate.get_dofn_specs = get_dofn_specs
    transform_evaluator.get_dofn_specs = get_dofn_specs
    try:
        yield
    finally:
        userstate.get_dofn_specs = original
        transform_evaluator.get_dofn_specs = original


@contextlib.contextmanager
def dofn_copies_from_one_pickle() -> Iterator[None]:
    """Inspect each DoFn method's arguments once, and pickle each DoFn once per run.

    For every bundle the runner makes a fresh copy of the step's DoFn by pickling and
    unpickling it, and inspects the signature of each of its methods again: with a bundle
    per stage for every flush of device buffers, that was a tenth of a busy run's time. The
    step's DoFn does not change during a run, so each bundle's copy is now unpickled from
    the same bytes, and a method's arguments are known by its class (or wrapped function)
    once looked at; a method set on the instance itself is always looked at.
    """
    original_arguments = core.get_function_arguments
    arguments: dict[tuple[object, str], tuple[list, list]] = {}
    pickled: dict[int, tuple[object, bytes]] = {}

    def get_function_arguments(obj, func):
        key = specs_cache_key(obj) if isinstance(obj, core.DoFn) else None
        if key is None or func in getattr(obj, "__dict__", {}):
            return original_arguments(obj, func)
        known = arguments.get((key, func))
        if known is None:
            known = arguments[(key, func)] = original_arguments(obj, func)
        names, defaults = known
        return list(names), list(defaults)

    def roundtrip(dofn):
        entry = pickled.get(id(dofn))
        if entry is None or entry[0] is not dofn:
            entry = pickled[id(dofn)] = (dofn, pickler.dumps(dofn))
        return pickler.loads(entry[1])

    core.get_function_arguments = get_function_arguments
    transform_evaluator.pickler = types.SimpleNamespace(roundtrip=roundtrip)
    try:
        yield
    finally:
        core.get_function_arguments = original_arguments
        transform_evaluator.pickler = pickler
