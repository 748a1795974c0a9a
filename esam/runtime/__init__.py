"""What every job needs to run: processes, precision and random state.

* :mod:`esam.runtime.distributed`: the process group under ``torchrun`` (or one process),
  collectives, DDP wrapping, rank-0 logging.
* :mod:`esam.runtime.precision`: precision names, autocast, the fp16 gradient scaler.
* :mod:`esam.runtime.seeding`: per-rank seeding, capture and restore of every RNG state.

Training, evaluation and benchmarks all build on these; nothing here knows a task.
"""
