"""Throughput, latency, memory, size and accuracy-at-precision benchmarks.

Modules, one job each:

* :mod:`esam.bench.settings` parses and checks the sweep settings (batch sizes, dtypes, ...).
* :mod:`esam.bench.models` defines the interface every benchmarked model is timed through,
  and the model names; :mod:`esam.bench.wrappers` implements it for esam's EfficientSAM (fast
  path and the official-style reference mode), SAM through ``segment-anything``, and the
  zero-shot harness's adapters.
* :mod:`esam.bench.timing` times a callable (CUDA events on GPU, ``perf_counter`` on CPU).
* :mod:`esam.bench.memory` measures peak memory (CUDA max allocated, or process RSS).
* :mod:`esam.bench.flops` counts parameters per component and FLOPs / MACs.
* :mod:`esam.bench.accuracy` builds the fixed synthetic accuracy set and scores masks against
  the fp32 masks of the same model.
* :mod:`esam.bench.worker` measures one configuration; it runs in a fresh process.
* :mod:`esam.bench.throughput` orchestrates a sweep and writes the results file.

Importing this package imports nothing heavy; torch is loaded by the modules that need it.
"""
