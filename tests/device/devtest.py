# Tiny test helpers for device-side tests. They run under CPython (pytest) and under
# MicroPython (tests/mp/runner.mjs), so: stdlib only, no pytest import.


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("expected %s from %s" % (exc_type.__name__, getattr(fn, "__name__", fn)))


def is_micropython():
    import sys
    return sys.implementation.name == "micropython"


def vector_path(name):
    """Path of a shared data file in tests/vectors/, on either interpreter."""
    if is_micropython():
        return "/tests/vectors/" + name
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "vectors", name)
