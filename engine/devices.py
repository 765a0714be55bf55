"""Where each role runs, and in which dtype.

    placements = resolve_placements(config.devices, models_by_role, gpu_count=torch.cuda.device_count())
    placements["policy"].device, placements["policy"].dtype

"auto" spreads the four roles (policy, monitor, reward, judge) over the GPUs there are,
sharing GPUs when there are fewer GPUs than distinct base models, and keeps roles that name
the same base model on the same device: players sharing a base share one copy in memory
only if it lives on one device. Without a GPU every role runs on the CPU.

dtype "auto" is float32 on CPU (bfloat16 matmuls are hundreds of times slower on the CPUs
this project runs on) and bfloat16 on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from engine.config import ROLES, DevicesConfig, Role
from storage.errors import UserError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def resolve_placements(
    devices: DevicesConfig, models_by_role: dict[Role, str], gpu_count: int
) -> dict[Role, Placement]:
    """A device and dtype for every role; explicit placements are kept as written."""
    device_of_model: dict[str, torch.device] = {}
    next_gpu = 0
    chosen: dict[Role, torch.device] = {}
    for role in ROLES:
        requested = getattr(devices, role)
        if requested != "auto":
            chosen[role] = torch.device("cuda:0" if requested == "cuda" else requested)
            continue
        model = models_by_role[role]
        if model not in device_of_model:
            if gpu_count == 0:
                device_of_model[model] = torch.device("cpu")
            else:
                device_of_model[model] = torch.device(f"cuda:{next_gpu % gpu_count}")
                next_gpu += 1
        chosen[role] = device_of_model[model]
    return {role: Placement(device=device, dtype=_dtype_for(devices.dtype, device)) for role, device in chosen.items()}


def _dtype_for(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return _DTYPES[requested]
    return torch.float32 if device.type == "cpu" else torch.bfloat16


THREADS_ENVIRONMENT_VARIABLE = "MINMAX_ENGINE_THREADS"


def intra_op_threads(cpu_count: int | None = None) -> int:
    """torch's intra-op thread count for a run: MINMAX_ENGINE_THREADS when set, else
    OMP_NUM_THREADS when set, else every core but one (at least one).

    A decode step is dozens of matrix products of a few hundred microseconds each, and every
    one ends at an OpenMP barrier: when another process holds one of the cores, a thread
    count equal to the core count waits at each barrier for a descheduled thread (measured
    on a shared 2-core machine: whole steps several times slower than on one thread). One
    core left over absorbs the rest of the machine's work.
    """
    for variable in (THREADS_ENVIRONMENT_VARIABLE, "OMP_NUM_THREADS"):
        configured = os.environ.get(variable, "").strip()
        if configured:
            try:
                threads = int(configured)
            except ValueError:
                raise UserError(f"{variable}={configured!r}: give a whole number of threads, e.g. {variable}=1") from None
            if threads < 1:
                raise UserError(f"{variable}={configured!r}: give at least 1 thread")
            return threads
    cores = cpu_count if cpu_count is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, cores - 1)


def set_intra_op_threads() -> int:
    """Apply `intra_op_threads()` to torch and return it."""
    threads = intra_op_threads()
    torch.set_num_threads(threads)
    return threads
