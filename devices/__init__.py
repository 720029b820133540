"""Where the graph runs: the one place that chooses NPU, GPU or CPU and absorbs the
differences between TensorFlow 1.15 and 2.x (runtime), with what it is built from: the NPU's
session options described once (npu_options), TensorFlow's oneDNN bfloat16 rewrite on the
CPU (onednn_bfloat16), the loss-scaling optimizers' "update applied" flag (finite_flag) and
the HCCL rank of an Ascend process (hccl_environment); towers over the devices of one
machine (parallel), and TensorFlow gRPC workers with the stop vote every data-parallel
process shares (distributed). May import data/, nets/ and losses/."""
