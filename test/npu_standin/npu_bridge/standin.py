"""STAND-IN: records calls, does not run on an NPU.

The record the tests read: CALLS in-process, or the JSON file named by
NPU_STANDIN_RECORD, written at exit, for subprocesses. Also the adapter
version this stand-in models (env NPU_STANDIN_ADAPTER, read once at import):

  before-r1.5  models TF adapter r1.2.0 (CANN 3.x)
  r1.5+        models master in saturation mode (Ascend 910), the default
  inf-nan      models master on an Ascend 910B in INF_NAN mode
"""
import atexit
import json
import os

ADAPTERS = ('before-r1.5', 'r1.5+', 'inf-nan')
ADAPTER = os.environ.get('NPU_STANDIN_ADAPTER', '') or 'r1.5+'
if ADAPTER not in ADAPTERS:
    raise ImportError('npu_bridge STAND-IN: NPU_STANDIN_ADAPTER=%r is not one of %s'
                      % (ADAPTER, ', '.join(ADAPTERS)))

CALLS = []


def at_least_r1_5():
    """True when the modelled adapter is r1.5.0 or later (named overflow flag, npu_init...)."""
    return ADAPTER != 'before-r1.5'


def models_master():
    """True when the modelled adapter is master (≥ r1.13: precision checks, npu_plugin)."""
    return ADAPTER in ('r1.5+', 'inf-nan')


def inf_nan_mode():
    """True when the modelled device runs in INF_NAN mode (910B): no float-status registers."""
    return ADAPTER == 'inf-nan'


def record(api, **details):
    """Appends {'api': api, **details} to CALLS and returns it."""
    entry = dict(details, api=api)
    CALLS.append(entry)
    return entry


def calls(api):
    """The recorded entries of one API, in call order."""
    return [entry for entry in CALLS if entry['api'] == api]


def dump():
    """Writes CALLS to NPU_STANDIN_RECORD (if set) as JSON; '{rank}' in it becomes RANK_ID,
    so one setting serves every rank a launch script starts."""
    path = os.environ.get('NPU_STANDIN_RECORD')
    if path:
        path = path.replace('{rank}', os.environ.get('RANK_ID', '0'))
        with open(path, 'w') as out:
            json.dump(CALLS, out, indent=1, default=str)


atexit.register(dump)
