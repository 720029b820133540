"""STAND-IN: records calls, does not run on an NPU.

The record the tests read: CALLS in-process, or the JSON file named by
NPU_STANDIN_RECORD, written at exit, for subprocesses.
"""
import atexit
import json
import os

CALLS = []


def record(api, **details):
    """Appends {'api': api, **details} to CALLS and returns it."""
    entry = dict(details, api=api)
    CALLS.append(entry)
    return entry


def calls(api):
    return [entry for entry in CALLS if entry['api'] == api]


def _dump():
    path = os.environ.get('NPU_STANDIN_RECORD')
    if path:
        with open(path, 'w') as out:
            json.dump(CALLS, out, indent=1, default=str)


atexit.register(_dump)
