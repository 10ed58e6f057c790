"""Memory probe for a vLLM GPU server, loaded through PYTHONPATH (diagnosis only, never used by servelab runs).

Put this folder first on PYTHONPATH of a vLLM server: in the engine-core process it wraps the worker's startup
stages and prints, before and after each, PyTorch's allocated and reserved bytes and the device's used bytes,
one line `SERVELAB-MEM {json}` on stderr, so server.log shows which stage holds which memory. It found why the
tied-KV experiment's memory slope is not the KV pool's (docs/h200-kv-slope.md).
"""
import functools
import json
import sys
import threading
import time

# The worker's four startup stages, in the order vLLM runs them: weights; the profile pass (which with
# --kv-cache-memory-bytes only compiles and warms up); the KV pool; graph capture and the sampler's warm-up.
_STAGES = {
    "vllm.v1.worker.gpu_worker": ("Worker", ["load_model", "determine_available_memory", "initialize_from_config",
                                             "compile_or_warm_up_model"]),
}


def _snapshot(stage, when):
    import torch

    if not torch.cuda.is_initialized():
        return
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    line = {
        "stage": stage,
        "when": when,
        "t": round(time.time(), 3),
        "allocated": torch.cuda.memory_allocated(),
        "reserved": torch.cuda.memory_reserved(),
        "device_used": total - free,
        "segments": stats.get("segment.all.current", 0),
        "inactive_split": stats.get("inactive_split_bytes.all.current", 0),
    }
    print("SERVELAB-MEM " + json.dumps(line), file=sys.stderr, flush=True)


def _wrap(cls, name, label):
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_servelab_wrapped", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        _snapshot(label, "before")
        result = original(*args, **kwargs)
        _snapshot(label, "after")
        return result

    wrapper._servelab_wrapped = True
    setattr(cls, name, wrapper)


def _patch_when_imported():
    # Poll instead of an import hook: the modules load seconds before the first stage runs.
    pending = dict(_STAGES)
    while pending:
        for module_name in list(pending):
            module = sys.modules.get(module_name)
            cls = getattr(module, pending[module_name][0], None) if module else None
            if cls is not None:
                for name in pending[module_name][1]:
                    _wrap(cls, name, f"{cls.__name__}.{name}")
                del pending[module_name]
        time.sleep(0.02)


threading.Thread(target=_patch_when_imported, daemon=True, name="servelab-mem").start()
