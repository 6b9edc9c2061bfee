"""Shared helpers of the benchmark scripts: the machine, its peak, timing.

Not part of the test suite or of the package; the scripts print their figures and
``benchmarks/RESULTS.md`` records them with the machine they ran on.
"""
import os
import platform
import statistics
import subprocess
import time

import torch

#: FP32 FLOPs per cycle per core assumed for the nominal peak, by vector ISA: two FMA units per core (server parts:
#: Intel Xeon since Skylake-SP, AMD Zen 4/5) x lanes (16 with AVX-512, 8 with AVX2) x 2 FLOPs per FMA.  AMD Zen 4
#: (family 25) executes AVX-512 on 256-bit units, so it gets the AVX2 figure.  A nominal peak only: the clock is the
#: TSC clock reported under KVM (turbo unknown), and the measured rates below are what fractions refer to.
FLOPS_PER_CYCLE = {"avx512": 64, "avx2": 32, "sse": 8}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {k: fields.get(k, "?").strip() for k in ("Model name", "CPU family", "Model", "Core(s) per socket",
                                                        "Socket(s)", "Thread(s) per core", "Flags")}
    except (OSError, subprocess.CalledProcessError):
        return {"Model name": platform.processor() or "?"}


def clock_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1])
    except OSError:
        pass
    return float("nan")


def other_load(min_cpu=20.0):
    """Other processes using more than ``min_cpu`` % of a core (a benchmark must run on an idle machine)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"], capture_output=True,
                             text=True).stdout
    except OSError:
        return []
    busy = []
    for line in out.splitlines()[1:]:
        pid, ppid, cpu, args = line.split(None, 3)
        if float(cpu) >= min_cpu and int(pid) != os.getpid() and int(ppid) != os.getpid() \
                and int(pid) != os.getppid():
            busy.append(f"{pid} {cpu}% {args}")
    return busy


def busy_fraction(seconds=2.0):
    """Fraction of all cores busy over ``seconds`` (from /proc/stat), measured while this process sleeps."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return float("nan")
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def vector_isa(info=None):
    """``"avx512"``, ``"avx2"`` or ``"sse"``: the widest FMA vector unit the nominal peak assumes."""
    info = info or cpu_model()
    flags = set(info.get("Flags", "").split())
    amd_zen4 = "AMD" in info.get("Model name", "") and info.get("CPU family", "").strip() == "25"
    if "avx512f" in flags and not amd_zen4:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "sse"


def nominal_peak_gflops(cores):
    return FLOPS_PER_CYCLE[vector_isa()] * clock_mhz() * 1e-3 * cores


def measured_peak_gflops(n=2048, repeats=5):
    """Best sgemm rate (``n x n`` by ``n x n``, float32, MKL) with the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best * 1e-9


def measured_conv_peak_gflops(repeats=5):
    """Best rate of a large 3x3 convolution (16 x 256 x 32 x 32 -> 256 channels, oneDNN), float32.

    On the AMD development machine MKL's sgemm did not use AVX-512 while oneDNN's convolutions did; the higher of
    the two measured rates is the practical peak that fractions of peak refer to.
    """
    x, w = torch.randn(16, 256, 32, 32), torch.randn(256, 256, 3, 3)
    conv = torch.nn.functional.conv2d
    conv(x, w, padding=1)
    best = min(timed(lambda: conv(x, w, padding=1)) for _ in range(repeats))
    return 2 * 16 * 256 * 256 * 9 * 32 * 32 / best * 1e-9


def synchronize(device=None):
    """Wait for the queued work of a CUDA ``device`` (nothing to wait for on a CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device=None):
    """Wall time of ``fn()``; on a CUDA ``device`` the queued kernels are waited for before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def parse_device(parser, name):
    """``torch.device(name)``, or the parser's one-line error (exit 2) for a name torch does not know or a device
    this torch cannot use (CUDA unavailable, no such GPU)."""
    try:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to this torch")
        torch.empty(0, device=device)
    except RuntimeError as exc:
        parser.error(f"--device {name}: {exc}")
    return device


def describe_gpu(device, repeats=5, n=8192):
    """Name, memory and measured fp32 sgemm rate (TF32 off, as the benchmarks run) of a CUDA ``device``."""
    props = torch.cuda.get_device_properties(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        best = min(timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpu_sgemm_gflops": round(2 * n ** 3 / best * 1e-9, 1)}


def median(values):
    return statistics.median(values)


def describe_machine(measure_peak=True, device="cpu"):
    """A dict describing the machine and the load on it, printed at the top of every benchmark (with a CUDA
    ``device``: its GPU too, whose measured sgemm rate is then the peak that fractions refer to)."""
    info = cpu_model()
    cores = len(os.sched_getaffinity(0))
    desc = {"cpu": info.get("Model name", "?"), "cpu_family": info.get("CPU family", "?"),
            "cpu_model": info.get("Model", "?"), "cores": cores, "clock_mhz": round(clock_mhz()),
            "avx512": "avx512f" in info.get("Flags", ""), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
            "other_busy_processes": other_load(),
            "busy_fraction_before": round(busy_fraction(), 3)}
    desc["nominal_peak_gflops"] = round(nominal_peak_gflops(torch.get_num_threads()), 1)
    if measure_peak:
        desc["sgemm_gflops"] = round(measured_peak_gflops(), 1)
        desc["conv_gflops"] = round(measured_conv_peak_gflops(), 1)
        desc["peak_gflops"] = max(desc["sgemm_gflops"], desc["conv_gflops"])
    if torch.device(device).type == "cuda":
        desc.update(describe_gpu(device))
        desc["peak_gflops"] = desc["gpu_sgemm_gflops"]
    return desc


def print_machine(desc):
    print(f"machine: {desc['cpu']} (family {desc['cpu_family']} model {desc['cpu_model']}), {desc['cores']} cores, "
          f"{desc['clock_mhz']} MHz, AVX-512 {desc['avx512']}; torch {desc['torch']}, "
          f"{desc['torch_threads']} threads (OMP_NUM_THREADS={desc['omp_num_threads']})")
    print(f"peak fp32: nominal {desc['nominal_peak_gflops']} GFLOP/s at the {desc['clock_mhz']} MHz TSC clock "
          f"({FLOPS_PER_CYCLE[vector_isa()]} FLOP/cycle/core assumed for {vector_isa()}; boost clocks unknown "
          f"under KVM), measured: MKL sgemm "
          f"{desc.get('sgemm_gflops', 'n/a')}, oneDNN 3x3 conv {desc.get('conv_gflops', 'n/a')} GFLOP/s "
          f"(peak used below: {desc.get('peak_gflops', 'n/a')}); load average {desc['loadavg']}; "
          f"cores busy before the run: {100 * desc['busy_fraction_before']:.0f} %")
    if "gpu" in desc:
        print(f"GPU: {desc['gpu']}, {desc['gpu_memory_gib']} GiB, CUDA {desc['cuda']}, cuDNN {desc['cudnn']}; "
              f"measured fp32 sgemm (TF32 off) {desc['gpu_sgemm_gflops']} GFLOP/s (the peak used below)")
    if desc["other_busy_processes"]:
        print("WARNING: other busy processes (ps %CPU is a lifetime average), timings may be contended:")
        for line in desc["other_busy_processes"]:
            print("   ", line[:160])
    else:
        print("no other busy process (>= 20 % CPU) on the machine")
