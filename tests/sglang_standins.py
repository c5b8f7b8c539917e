"""Stand-ins that let SGLang's NGRAM worker module import on a CPU machine (tests only).

Replaced, and nothing else: ``sgl_kernel`` (SGLang's CUDA kernel package; CUDA-only wheels)
and ``torchvision`` (not installed here; SGLang's multimodal configs import it). Every
attribute of a stand-in module is a callable that raises NotImplementedError if a kernel is
ever called, so a test that reached one would fail loudly instead of computing nothing.
Import this module before anything from sglang.srt.speculative / sglang.kernels.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

REPLACED = {name for name in ("sgl_kernel", "torchvision") if importlib.util.find_spec(name) is None}


class _Kernel:
    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self.__name__}: CUDA kernel stand-in (this test machine has no GPU)")

    def __getattr__(self, item):
        return _Kernel(f"{self.__name__}.{item}")


class _StandInModule(types.ModuleType):
    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Kernel(f"{self.__name__}.{item}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in REPLACED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0"  # transformers asks torchvision's version
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
