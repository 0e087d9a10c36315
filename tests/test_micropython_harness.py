"""The MicroPython harness must fail when device code uses what MicroPython lacks."""
import os
import shutil

import pytest

from tests.mp import harness

ROOT = harness.ROOT


def _fake_root(tmp_path, module_source, test_source):
    shutil.copytree(os.path.join(ROOT, "protocol"), tmp_path / "protocol")
    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / "__init__.py").write_text("")
    (tmp_path / "firmware" / "thing.py").write_text(module_source)
    dev = tmp_path / "tests" / "device"
    dev.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "tests", "device", "devtest.py"), dev)
    (dev / "test_thing.py").write_text(test_source)
    return str(tmp_path)


@pytest.mark.parametrize("source, expected", [
    ("from dataclasses import dataclass\n", "dataclasses"),
    ("import typing\n", "typing"),
    ("import json\nX = json.dumps({'b': 1}, sort_keys=True)\n", "extra keyword"),
    ("import logging\n", "logging"),
    ("import hmac\n", "hmac"),
])
def test_harness_fails_on_cpython_only_code(tmp_path, source, expected):
    root = _fake_root(tmp_path, source, "from firmware import thing\n\ndef test_uses_it():\n    assert thing\n")
    results = harness.run_tests("tests/device/test_thing.py", root=root)
    assert not any(r["ok"] for r in results), results
    assert any(expected in r["output"] for r in results), results


def test_harness_reports_pass_and_fail_per_test(tmp_path):
    root = _fake_root(tmp_path, "X = 1\n",
                      "from firmware import thing\n\ndef test_good():\n    assert thing.X == 1\n\n"
                      "def test_bad():\n    assert thing.X == 2, 'X is not 2'\n\n"
                      "async def test_async_good():\n    import asyncio\n    await asyncio.sleep(0)\n")
    results = {r["test"]: r for r in harness.run_tests("tests/device/test_thing.py", root=root)}
    assert results["test_good"]["ok"]
    assert results["test_async_good"]["ok"]
    assert not results["test_bad"]["ok"]
    assert "X is not 2" in results["test_bad"]["output"]


def test_run_code_is_real_micropython():
    out = harness.run_code("import sys\nprint(sys.implementation.name)\n")
    assert out.strip() == "micropython"
