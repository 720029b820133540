"""STAND-IN of Huawei CANN's TF adapter npu_bridge (tests only; see ../README.md).

Importing the real package loads the adapter's C++ library; importing this one
installs the session wrapper (npu_bridge/_session.py) that checks NPU session
configs, starts the HCCL stand-in and models loop sinking. Undo it with
npu_bridge._session.uninstall().
"""
from npu_bridge import standin  # noqa: F401  (checks NPU_STANDIN_ADAPTER)
from npu_bridge import _session

_session.install()
