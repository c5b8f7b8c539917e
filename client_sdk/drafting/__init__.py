"""Drafting: the request's own-text index, the calibrated tree builder, the drafters, the
planners and the Speculator facade. numpy and numba only: no gRPC, no torch."""

from pathlib import Path

from client_sdk.drafting.kernel_cache import drop_stale

# every module with compiled kernels: a change to any of them invalidates all their cached compilations
KERNEL_SOURCES = ("kernels.py", "merge_kernels.py", "merge_reference.py", "step_kernels.py", "cache_kernels.py",
                  "resolve_kernels.py", "parallel.py")
drop_stale(Path(__file__).parent, KERNEL_SOURCES)
