"""XLA_FLAGS for the benchmarks that compile on a mesh of host CPU devices (lm.py, replicas.py).

XLA reads the flags once, so they must be set before jax is imported: this module
imports no jax, and those scripts import it (and call :func:`set_xla_flags`) first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

HOST_DEVICES = 4  # one per replica: the all-reduces are counted under shard_map on them
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
FAST_COMPILE_FLAG = "--xla_backend_optimization_level"


def set_xla_flags(argv: Sequence[str]) -> None:
    """``HOST_DEVICES`` host CPU devices; with ``--quick`` in ``argv``, LLVM at -O0.

    A quick run's programs compile about twice as fast at -O0 and run a few times
    slower, which pays off over its few steps; it changes no byte count: the HLO,
    where the all-reduces are counted, is optimized as usual. Flags already in
    ``XLA_FLAGS`` are left as they are.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if DEVICE_COUNT_FLAG not in flags:
        flags = f"{flags} {DEVICE_COUNT_FLAG}={HOST_DEVICES}".strip()
    if "--quick" in argv and FAST_COMPILE_FLAG not in flags:
        flags += f" {FAST_COMPILE_FLAG}=0"
    os.environ["XLA_FLAGS"] = flags
