"""esam.utils.allocator: recording the allocator and keeping freed memory mapped."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from esam.utils.allocator import _preloaded, allocator_info, preloaded_allocators


def _in_fresh_process(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_allocator_info_names_preloads_and_malloc_settings(monkeypatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2:/opt/x/libfoo.so")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    info = allocator_info()
    assert info["ld_preload"] == ["libjemalloc.so.2", "libfoo.so"]
    assert info["malloc_env"]["MALLOC_ARENA_MAX"] == "2"
    assert "LD_PRELOAD" not in info["malloc_env"]
    # only a library that replaces malloc blocks mallopt; an OpenMP runtime does not
    assert preloaded_allocators() == ["libjemalloc.so.2"]
    monkeypatch.setenv("LD_PRELOAD", "/opt/intel/lib/libiomp5.so")
    assert preloaded_allocators() == []
    monkeypatch.delenv("LD_PRELOAD")
    assert _preloaded() == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_memory_is_reused_without_new_page_faults() -> None:
    # A 64 MiB buffer allocated, freed and allocated again: with glibc's defaults the second
    # allocation is a fresh mmap and faults every page in again; once freed memory is retained
    # the second allocation reuses the pages already mapped.
    code = """
import json, resource
import numpy as np
from esam.utils.allocator import retain_freed_memory, allocator_info
retain = {retain}
applied = retain_freed_memory() if retain else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(8 << 20); del a
f0 = faults(); b = np.ones(8 << 20); f1 = faults()
from esam.utils.allocator import retaining_freed_memory
print(json.dumps({{"applied": applied, "faults": f1 - f0, "info": allocator_info(),
                   "retaining": retaining_freed_memory()}}))
"""
    default = _in_fresh_process(code.format(retain=False))
    retained = _in_fresh_process(code.format(retain=True))
    # At least one fault per 2 MiB (transparent huge pages may back the buffer).
    assert default["faults"] >= (64 << 20) // (2 << 20)
    assert retained["applied"] and retained["info"]["retain_freed_memory"]
    assert retained["retaining"] and not default["retaining"]
    assert retained["faults"] * 10 <= default["faults"]
    assert not default["info"]["retain_freed_memory"]
