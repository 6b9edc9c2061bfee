"""The machine a process runs on, as recorded with every training segment.

A run resumed on another kind of CPU may differ from an uninterrupted one at float rounding (the SRF layer's
``auto`` formulation and oneDNN's kernels depend on the vector ISA), so every segment of a run names its machine.
"""
import os
import platform
import socket

import torch


def _cpuinfo():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def describe_machine():
    """A JSON-ready dict: host, CPU model/family/model number, ATen's CPU capability, cores, threads, versions.

    >>> sorted(describe_machine())
    ['aten_capability', 'cores', 'cpu', 'cpu_family', 'cpu_model', 'dcnbio', 'host', 'python', 'threads', 'torch']
    """
    from ..version import __version__

    info = _cpuinfo()
    return {
        "host": socket.gethostname(),
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": info.get("cpu family", ""),
        "cpu_model": info.get("model", ""),
        "aten_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "dcnbio": __version__,
        "python": platform.python_version(),
    }
