"""Importable stand-ins for modules that are missing in the smoke child.

GPU-only modules (flash-attention, mamba kernels, triton, ...) cannot exist on a CPU
machine; other missing modules (sentencepiece, brotli, ...) are only needed at run time,
to read data or compress the artifact. Both are replaced by shim modules so that the
submission imports and its model can be built; using a shim raises ShimUsedError, which
names the module and says whether it is GPU-only.

Only imports made by the submission's own files are shimmed (a library probing for an
optional dependency gets the real ImportError), and so are imports the submission wraps
in `try/except ImportError`: it has its own fallback.
Used inside the child only; nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

# Top-level names of modules that need an NVIDIA GPU (kernels, CUDA bindings).
GPU_ONLY_MODULES = {
    "apex", "bitsandbytes", "causal_conv1d", "cuda", "cupy", "cut_cross_entropy", "deep_gemm",
    "fla", "flash_attn", "flash_attn_2_cuda", "flash_attn_3", "flash_attn_interface", "flashinfer",
    "flex_attn", "hopper", "kernels", "liger_kernel", "mamba_ssm", "natten", "nvidia", "pycuda",
    "quack", "selective_scan_cuda", "sageattention", "te", "thunderkittens", "tilelang",
    "transformer_engine", "triton", "xformers",
}


def is_gpu_only(module: str) -> bool:
    top = module.split(".")[0]
    return top in GPU_ONLY_MODULES or top.startswith(("flash_attn", "mamba", "triton", "cuda_"))


class ShimUsedError(RuntimeError):
    """Submission code used a module that was shimmed because it is missing here."""

    def __init__(self, module: str, what: str):
        self.module = module.split(".")[0]
        self.gpu_only = is_gpu_only(module)
        if self.gpu_only:
            message = f"{what} needs {self.module}, a GPU-only module (shimmed on this CPU machine)"
        else:
            message = f"{what} needs {self.module}, which is not installed here (shimmed as run-time only)"
        super().__init__(message)


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "shape")


class Shim:
    """Any attribute of a shimmed module: decorating and configuring work, using raises."""

    def __init__(self, name: str):
        object.__setattr__(self, "_shim_name", name)

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Shim(f"{self._shim_name}.{attr}")

    def __setattr__(self, attr: str, value) -> None:
        pass  # `triton.config.x = 1` at import time: ignore

    def __call__(self, *args, **kwargs):
        if any(_is_tensor(a) for a in (*args, *kwargs.values())):
            raise ShimUsedError(self._shim_name, f"calling {self._shim_name}()")
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], Shim):
            return Shim(f"{self._shim_name}({getattr(args[0], '__name__', 'fn')})")  # used as a decorator
        return Shim(f"{self._shim_name}()")

    def __getitem__(self, key):
        return Shim(f"{self._shim_name}[]")  # kernel[grid], tl.tensor[...] annotations

    def __mro_entries__(self, bases):
        return (object,)  # `class X(shimmed.Base)` still defines a class

    def __repr__(self) -> str:
        return f"<shim {self._shim_name}>"

    def __bool__(self) -> bool:
        return True

    def _used(self, *args, **kwargs):
        raise ShimUsedError(self._shim_name, f"using {self._shim_name}")

    __int__ = __float__ = __index__ = __len__ = __iter__ = _used
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __floordiv__ = _used
    __lt__ = __le__ = __gt__ = __ge__ = _used
    __enter__ = _used


class ShimModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__path__ = []  # a package, so that `import x.y.z` also resolves to shims
        self.__all__ = []
        self.__version__ = "0.0.0"
        self.__shim__ = True

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Shim(f"{self.__name__}.{attr}")


class _ShimLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return ShimModule(spec.name)

    def exec_module(self, module) -> None:
        pass


class ShimFinder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path: reached only when a module really is missing."""

    def __init__(self, own_folder: str, guarded_lines: set[int], script_file: str):
        self.own_folder = own_folder.rstrip("/") + "/"  # imports from files here may be shimmed
        self.guarded_lines = guarded_lines  # lines of the script's try/except-ImportError imports
        self.script_file = script_file
        self.shimmed: dict[str, str] = {}  # top-level name -> "gpu-only" | "run-time"

    def _importer(self):
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith("<frozen") and filename != __file__:
                return frame
            frame = frame.f_back
        return None

    def find_spec(self, fullname, path=None, target=None):
        frame = self._importer()
        filename = frame.f_code.co_filename if frame is not None else ""
        # "<string>": code the submission exec()s itself.
        if not (filename.startswith(self.own_folder) or filename == "<string>"):
            return None
        if frame.f_code.co_filename == self.script_file and frame.f_lineno in self.guarded_lines:
            return None  # the script has its own fallback for this import
        top = fullname.split(".")[0]
        self.shimmed.setdefault(top, "gpu-only" if is_gpu_only(top) else "run-time")
        return importlib.machinery.ModuleSpec(fullname, _ShimLoader(), is_package=True)


LAST_FINDER: ShimFinder | None = None


def install(own_folder: str, guarded_lines: set[int], script_file: str) -> ShimFinder:
    global LAST_FINDER
    finder = ShimFinder(own_folder, guarded_lines, script_file)
    sys.meta_path.append(finder)
    LAST_FINDER = finder
    return finder


def hide_from_libraries() -> None:
    """Drop shim modules from sys.modules once the submission holds them.

    torch probes for triton with find_spec/import; a shim left in sys.modules would make
    it believe triton is installed. Later imports by the submission get new shims.
    """
    for name, module in list(sys.modules.items()):
        if isinstance(module, ShimModule):
            del sys.modules[name]
