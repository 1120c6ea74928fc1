"""MIGPerf: benchmark DL training and inference on Multi-Instance GPUs, whole GPUs or CPUs.

``python -m migperf info|plan|apply|reset|run|report`` (see :mod:`migperf.cli`).
"""
