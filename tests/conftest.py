"""Test set-up shared by the whole suite.

Device tests (tests/device/test_*.py) are collected twice: as ordinary pytest tests on
CPython, and under real MicroPython through tests/mp/harness.py, each MicroPython test
showing as `tests/device/test_x.py::mp::test_name` with MicroPython's traceback on failure.
"""
import ast
import asyncio
import inspect
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_DIR = os.path.join(ROOT, "tests", "device")
for p in (ROOT, DEVICE_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)

from tests.mp import harness  # noqa: E402


def pytest_pyfunc_call(pyfuncitem):
    # Device tests may be `async def` (they must also run under MicroPython, which has no
    # pytest-asyncio): run them to completion on a fresh event loop.
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
        return True
    return None


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".py" and file_path.name.startswith("test_") \
            and str(file_path.parent) == DEVICE_DIR and not parent.config.getoption("no_micropython"):
        nodeid = os.path.relpath(str(file_path), str(parent.config.rootpath)).replace(os.sep, "/") + "::mp"
        return MicroPythonFile.from_parent(parent, path=file_path, nodeid=nodeid)
    return None


def pytest_addoption(parser):
    parser.addoption("--no-micropython", action="store_true", dest="no_micropython",
                     help="skip the MicroPython runs of device tests (CPython only)")


class MicroPythonFile(pytest.File):
    """The test_* functions of a device test module, run under MicroPython in one go."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._results = None

    def collect(self):
        tree = ast.parse(self.path.read_text(), str(self.path))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name)
        yield MicroPythonItem.from_parent(self, name="<import>")

    def results(self):
        if self._results is None:
            self._results = {r["test"]: r for r in harness.run_tests(os.path.relpath(self.path, ROOT))}
        return self._results


class MicroPythonFailure(Exception):
    pass


class MicroPythonItem(pytest.Item):
    def runtest(self):
        results = self.parent.results()
        broken = results.get("<import>") or results.get("<runner>")
        if self.name == "<import>":
            if broken:
                raise MicroPythonFailure(broken["output"])
            return
        if broken:
            raise MicroPythonFailure("module failed to load under MicroPython:\n" + broken["output"])
        r = results.get(self.name)
        if r is None:
            raise MicroPythonFailure("MicroPython did not run %s (not a module-level function there?)" % self.name)
        if not r["ok"]:
            raise MicroPythonFailure(r["output"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "under MicroPython:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "mp::" + self.name
