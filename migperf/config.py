"""The ``migperf run`` spec schema: ``DEFAULTS`` documents every key with the reason for its
value. A spec (``configs/*.yaml``) states only what differs; ``configs/synthetic.yaml`` (the CPU
suite) is the default. Loaded by :func:`migperf.spec.load_spec` through ``common.config`` (strict:
unknown keys and wrong types are errors naming the file), then the experiment list is checked.

    name: my_suite
    defaults: {warmup_iters: 20, stop: {max_time_s: 20}}
    experiments:
      - {name: isolated, workloads: [resnet50], devices: [mig:all], batch_sizes: [1, 256], modes: [inference]}

An experiment: ``name``, ``workloads`` (a model name or ``{model: ..., <cell field>: ...}``),
``devices`` (``cuda:N``, ``GPU-<uuid>``, ``MIG-<uuid>``, ``mig:all`` = every MIG device NVML lists,
``mig:N`` = the N-th, ``cpu``, ``cpu:K``, ``cpu:K-M``, ``cpu:K,L``), ``batch_sizes``, ``seq_lens``
(NLP only), ``modes`` (``train``, ``inference`` or ``{open_loop: {...}}`` with the keys of
``OPEN_LOOP``), ``concurrent`` (cells differing only in device run at the same time), ``repeats``,
and any cell field of ``DEFAULTS["defaults"]``.
"""

from __future__ import annotations

from common.config import Range

CELL_DEFAULTS = {
    "warmup_iters": 5,           # RECONSTRUCTED: enough for cuDNN autotune + allocator warm-up at the paper's batch sizes
    "sample_interval_s": 0.1,    # NVML sampler period; 100 ms is also GPM's minimum interval (NVML reference)
    "amp": False,                # bf16 autocast; the paper measured fp32 PyTorch
    "channels_last": False,      # memory format for CV models (fp32 default as the original tool)
    "optimizer": None,           # null: SGD for CV, AdamW for NLP (MLSysOps/MIGProfiler@55ce2af train_cv.py / train_nlp.py)
    "lr": None,                  # null: 0.01 SGD / 1e-4 AdamW (throughput does not depend on it)
    "image_size": 224,           # ImageNet resolution, as the paper's CV workloads
    "num_classes": None,         # null: 1000 for CV, 2 for NLP heads
    "threads": None,             # CPU threads; null: the pinned core count, else torch's default
    "seq_len": 64,               # the original NLP scripts' default sequence length
    "input": "device",           # device: a fixed batch already on the device | pinned / pageable: copy each batch
                                 # from (pinned) host memory inside the timed region (PCIe is shared under MIG)
    "stop": {
        "min_iters": 20,         # RECONSTRUCTED: floor before any stability test
        "min_time_s": 1.0,       # RECONSTRUCTED: covers clock ramp-up after warm-up
        "window_iters": 10,      # perf_analyzer-style stability windows (Triton perf_analyzer docs: 3 windows)
        "windows": 3,            # Triton perf_analyzer: stable when 3 consecutive windows agree
        "tolerance": 0.10,       # Triton perf_analyzer's default stability threshold (10 %)
        "percentile": 99.0,      # the tail the stop rule must be able to report (MLPerf LoadGen Server uses p99)
        "ci_tolerance": 0.10,    # RECONSTRUCTED: stop only when that percentile's 95 % CI is within ±10 % of it
        "min_tail": 10,          # RECONSTRUCTED: a percentile is reported only with >= 10 samples above it
        "max_time_s": 30.0,      # RECONSTRUCTED: cap per cell
        "max_iters": 100000,     # cap per cell (raw samples are kept)
    },
    "stats": {
        "bootstrap": 1000,       # bootstrap resamples for each percentile's CI (percentile bootstrap, seeded)
        "confidence": 0.95,      # CI level
    },
    "dcgm": {
        "source": "auto",        # auto: exporter, then dcgmi | exporter | dmon | off  (migperf.dcgm)
        "url": "http://localhost:9400/metrics",  # dcgm-exporter's default port (NVIDIA/dcgm-exporter README)
        "dcgmi": "dcgmi",        # the dcgmi binary (DCGM's CLI)
        "interval_s": 1.0,       # the original tool polled dcgm-exporter at 1 Hz (MIGProfiler metric_collector.py)
    },
    "contention": {
        "max_other_cores": 0.10,  # RECONSTRUCTED: mark a cell when other processes used > 10 % of its cores
        "max_steal_pct": 2.0,     # RECONSTRUCTED: mark a cell when the hypervisor stole > 2 % of its cores' time
        "gpu_processes": True,    # mark a cell when NVML lists other compute processes on its device
    },
    "idle_s": 2.0,               # RECONSTRUCTED: seconds of board-power sampling before each GPU group (idle power)
}

OPEN_LOOP = {
    "rates": [],                 # offered queries/s (required)
    "duration_s": 600.0,         # MLPerf LoadGen Server min_duration (mlcommons/inference loadgen/mlperf.conf)
    "p99_bound_ms": None,        # the latency bound of "max rate within bound" (resnet50 Server: 15 ms in mlperf.conf)
    "percentile": 99.0,          # LoadGen Server target_latency_percentile
    "min_queries": 100,          # LoadGen's default min_query_count (loadgen test_settings)
    "confidence": 0.99,          # LoadGen early-stopping confidence (loadgen/results.cc)
    "drain_factor": 2.0,         # queries still queued at drain_factor x duration are counted unserved
    "rules": "loadgen",          # loadgen | quick (--quick: spec durations, results say LoadGen rules are not met)
    "server": {
        "max_batch": 1,          # queries per server batch (1: no dynamic batching, the original tool's default)
        "max_delay_ms": 0.0,     # how long the oldest query may wait for a batch to fill (Triton max_queue_delay)
        "workers": 1,            # concurrent model executions (Triton instance count)
    },
}

DEFAULTS = {
    "name": "synthetic",         # the run's name: runs/migperf/<name>/<stamp>-s<seed>/
    "seed": 0,                   # base seed; repeat r uses seed + r (inputs, weights, Poisson arrivals)
    "description": "",
    "defaults": CELL_DEFAULTS,   # cell fields for every experiment
    "experiments": [],           # the matrix (see the module docstring)
}

# checked by common.config when a spec is loaded (migperf.spec.load_spec); null means "no tail
# percentile" for a stop rule (configs/smoke.yaml: too few iterations for one)
RULES = {"defaults.stop.percentile": Range(0, 100, open_min=True, open_max=True, null=True)}

# choices checked by migperf.spec before anything runs (named CHOICES, not RULES: "open_loop.rules"
# is not a DEFAULTS key, so common.config could not check it)
CHOICES = {"defaults.input": ("device", "pinned", "pageable"),
         "defaults.dcgm.source": ("auto", "exporter", "dmon", "off"),
         "open_loop.rules": ("loadgen", "quick")}
