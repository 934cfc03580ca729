"""Run a training script and time its optimizer steps from the outside.

    python bench/step_clock.py RESULT.json -- train_network.py --flags …
    python bench/step_clock.py RESULT.json -m trainer train.toml --quiet

It registers a global optimizer step hook (``torch.optim.optimizer.
register_optimizer_step_post_hook``), so it times kohya's scripts and ours the same way
without changing either: on CUDA a timing event per step (no host sync added), on the
CPU the wall clock. At exit it writes the step times, the peak memory (CUDA:
``max_memory_allocated``; CPU: peak RSS) and the CUDA paths it saw to RESULT.json.

It imports only the standard library and torch: it runs in kohya's virtualenv as well.
"""

from __future__ import annotations

import atexit
import gc
import json
import resource
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

CUDA = torch.cuda.is_available()
_events: list[Any] = []
_paths: dict[str, Any] = {}


def _after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if CUDA:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        _events.append(event)
    else:
        _events.append(time.perf_counter())
    if len(_events) == 1:
        _paths.update(_look(optimizer))


def _look(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What the run is doing, read once after its first step from the live objects."""
    group = optimizer.param_groups[0]
    first = group["params"][0]
    seen: dict[str, Any] = {
        "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
        "fused_optimizer": bool(group.get("fused")),
        "trained_on": str(first.device),
    }
    unets, encoders = [], []
    for thing in gc.get_objects():
        if isinstance(thing, torch.nn.Module):
            name = type(thing).__name__
            if "UNet2DConditionModel" in name:
                unets.append(thing)
            elif name.startswith("CLIPTextModel"):
                encoders.append(thing)
    if unets:
        unet = max(unets, key=lambda m: sum(p.numel() for p in m.parameters()))
        conv = next((m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)), None)
        seen["unet_dtype"] = str(next(unet.parameters()).dtype)
        if conv is not None:
            seen["channels_last"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen["text_encoders_on"] = sorted({str(next(e.parameters()).device) for e in encoders})
    return seen


def _write(result: Path) -> None:
    if CUDA:
        torch.cuda.synchronize()
        first = _events[0] if _events else None
        times = [first.elapsed_time(e) / 1000 for e in _events] if first else []
        peak = torch.cuda.max_memory_allocated()
        device = torch.cuda.get_device_name()
    else:
        start = _events[0] if _events else 0.0
        times = [t - start for t in _events]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        device = f"cpu ({torch.get_num_threads()} threads)"
    try:
        compiled = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    except (AttributeError, KeyError):
        compiled = 0
    _paths["compiled_graphs"] = compiled
    result.write_text(
        json.dumps({"step_times": times, "peak_bytes": peak, "device": device, "paths": _paths})
    )


def main() -> None:
    result, *rest = sys.argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    register_optimizer_step_post_hook(_after_step)
    atexit.register(_write, Path(result))
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        sys.path.insert(0, str(Path(rest[0]).resolve().parent))
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
