"""docs/protocol.md, the JSON Schemas and the decoder must agree."""
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from protocol import messages, reasons, signing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_KEY = bytes(range(32))  # the test key the examples are signed with
KINDS = ("swipe", "result", "state", "config", "settlement")


def schema(kind):
    with open(os.path.join(ROOT, "protocol", "schemas", kind + ".schema.json")) as f:
        return json.load(f)


def doc_examples():
    text = open(os.path.join(ROOT, "docs", "protocol.md")).read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```json (\w+)\n(.*?)```", text, re.S)]


def test_doc_has_an_example_of_every_message():
    assert {kind for kind, _ in doc_examples()} == set(KINDS)


@pytest.mark.parametrize("kind, text", doc_examples())
def test_doc_example_is_valid(kind, text):
    msg = json.loads(text)
    jsonschema.Draft202012Validator(schema(kind)).validate(msg)
    assert messages.decode(kind, text.encode()) == msg
    if kind in signing.SIGNED_FIELDS:
        assert signing.verify(kind, msg, DOC_KEY), "the doc's MAC is wrong"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_and_refuses_what_decoder_refuses(kind):
    s = schema(kind)
    jsonschema.Draft202012Validator.check_schema(s)
    example = json.loads(next(t for k, t in doc_examples() if k == kind))
    validator = jsonschema.Draft202012Validator(s)
    for name in list(example):
        broken = dict(example)
        broken[name] = 1.5  # a float is wrong everywhere in v1
        assert not validator.is_valid(broken), name
        with pytest.raises(messages.ProtocolError):
            messages.validate(kind, broken)


def test_schemas_are_generated_from_the_code():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_schemas.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_doc_lists_every_reason_code():
    text = open(os.path.join(ROOT, "docs", "protocol.md")).read()
    for code in reasons.TABLE:
        assert "`%s`" % code in text, code
