"""The code that runs inside the smoke child process (never in the auditor's).

Usage: python child.py SPEC.json. The spec (written by runner.py) names the prepared
source, the working copy, the limits, the shims module and the model calls found
statically. Under bubblewrap (auditor/sandbox.py) the child is already confined when it
starts: this file and the shims are the only auditor code it can see. Unsandboxed
(--no-sandbox) it sets rlimits itself. It installs import shims, imports the submission as
a module without running its entry point, builds the model on the meta device (and on CPU
for one forward pass when asked), and writes the result as JSON to the result pipe
($AUDITOR_RESULT_FD). Everything it reports can be forged by the submission's code, which
runs in the same process: the parent marks it as reported, not computed.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

def confine(spec: dict) -> dict:
    """Rlimits (again, in case the launcher could not set them); the sandbox did the rest."""
    limits = spec["limits"]
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    return {}


def load_shims(path: str):
    """Our shims module, loaded from its file under a name no submission uses."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("auditor_smoke_shims", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["auditor_smoke_shims"] = module
    module_spec.loader.exec_module(module)
    return module


def patch_torch(torch) -> None:
    """Keep import-time torch.compile and CUDA probes from killing a CPU import."""

    def compile_passthrough(model=None, *args, **kwargs):
        if model is None:
            return lambda fn: fn  # @torch.compile(mode=...)
        return model

    torch.compile = compile_passthrough

    class _NoDevice:
        name = "cpu (smoke)"
        major = minor = 0
        total_memory = 0
        multi_processor_count = 1

    torch.cuda.get_device_capability = lambda *a, **k: (0, 0)
    torch.cuda.get_device_name = lambda *a, **k: _NoDevice.name
    torch.cuda.get_device_properties = lambda *a, **k: _NoDevice()
    torch.cuda.mem_get_info = lambda *a, **k: (0, 0)
    torch.cuda.is_bf16_supported = lambda *a, **k: False


class _TorchPatcher:
    """A meta-path finder that lets `torch` load as usual, then patches it before anyone uses it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        module_spec = importlib.util.find_spec("torch")
        if module_spec is None or module_spec.loader is None:
            return module_spec
        load = module_spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
            patch_torch(module)

        module_spec.loader.exec_module = exec_module
        return module_spec


def run(spec: dict) -> dict:
    result: dict = {"status": "fail", "notes": [], "shimmed": {}}
    started = time.monotonic()
    workdir = spec["workdir"]
    script = spec["script"]
    os.chdir(workdir)
    sys.path[:0] = [workdir]
    sys.argv = [script]
    sys.dont_write_bytecode = True

    shims = sys.modules["auditor_smoke_shims"]  # our code, loaded before any submission code runs
    finder = shims.install(workdir, set(spec.get("guarded_lines", [])), script)
    # torch is patched the moment anything imports it (the submission, first thing, in
    # practice); code that never imports torch does not pay for it.
    sys.meta_path.insert(0, _TorchPatcher())

    with open(spec["source"], encoding="utf-8") as handle:
        text = handle.read()
    module_name = "__smoke_submission__"
    module = type(sys)(module_name)
    module.__file__ = script
    module.__builtins__ = __builtins__
    sys.modules[module_name] = module
    try:
        code = compile(text, script, "exec")
    except SyntaxError as exc:
        result["error"] = {"kind": "syntax", "message": f"{exc.msg} at line {exc.lineno}"}
        return result
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - classify whatever the submission raised
        result["error"] = classify(exc, script, "import")
        result["shimmed"] = finder.shimmed
        return result
    result["import_seconds"] = round(time.monotonic() - started, 3)
    result["shimmed"] = finder.shimmed
    shims.hide_from_libraries()
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - the environment itself is broken
        result["error"] = {"kind": "exception", "message": f"cannot import torch: {exc}"}
        return result

    skip_dynamo_disable(torch)
    build = build_model(torch, module, spec.get("candidates", []), spec.get("forward", False), script)
    result["shimmed"] = finder.shimmed
    result.update(build)
    return result


def skip_dynamo_disable(torch) -> int:
    """Many meta kernels (normal_, arange, ...) are Python functions that torch wraps to run
    with torch._dynamo disabled, and the first call of one imports torch._dynamo to do that:
    1.2 s of CPU, as much as importing torch, in most builds on the meta device. Nothing here
    runs under dynamo (torch.compile is a passthrough), so the wrappers that exist now are
    told that their function, as it is, is the disabled version (their own cache attribute).
    Returns how many; none when the submission imported torch._dynamo already."""
    import gc
    import types

    if "torch._dynamo" in sys.modules:
        return 0
    try:  # a torch whose wrapper differs keeps its slow path
        wrapper_code = torch._compile._disable_dynamo(lambda: None).__code__
        fn_cell = wrapper_code.co_freevars.index("fn")
    except (AttributeError, TypeError, ValueError):
        return 0
    told = 0
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__ is wrapper_code:
            fn = obj.__closure__[fn_cell].cell_contents
            try:
                setattr(fn, "__dynamo_disable", fn)
                told += 1
            except (AttributeError, TypeError):
                pass
    return told


def _config_objects(torch, namespace: dict) -> list:
    """Instances of the script's plain classes (Hyperparameters and the like) that build with no arguments."""
    found = []
    for value in list(namespace.values()):
        if not isinstance(value, type) or value.__module__ != "__smoke_submission__":
            continue
        if issubclass(value, torch.nn.Module) or issubclass(value, BaseException):
            continue
        try:
            found.append(value())
        except Exception:  # noqa: BLE001 - not a config class
            continue
    return found


def _evaluate_call(torch, module, candidate: dict, device: str):
    namespace = dict(module.__dict__)
    problems = []
    for statement in candidate["bindings"]:
        try:
            exec(statement, namespace)
        except Exception as exc:  # noqa: BLE001 - leave the name unresolved, try the fallbacks
            problems.append(f"{statement[:60]}: {type(exc).__name__}")
    configs = None
    for _ in range(20):
        try:
            with torch.device(device):
                return eval(candidate["call"], namespace), problems
        except NameError as exc:
            name = getattr(exc, "name", None)
            if not name:
                raise
            # An unresolved local: a config instance that has the attributes the call reads,
            # or a config attribute of the same name (vocab_size from args.vocab_size).
            configs = configs if configs is not None else _config_objects(torch, module.__dict__)
            wanted = candidate["attr_uses"].get(name, [])
            match = next((c for c in configs if wanted and all(hasattr(c, a) for a in wanted)), None)
            if match is None:
                match_value = next((getattr(c, name) for c in configs if hasattr(c, name)), None)
                if match_value is None:
                    raise
                namespace[name] = match_value
            else:
                namespace[name] = match
            problems.append(f"{name} taken from {type(match).__name__ if match else 'config'}")
    raise RuntimeError("could not resolve the model call's arguments")


def build_model(torch, module, candidates: list[dict], forward: bool, script: str) -> dict:
    if not candidates:
        return {"error": {"kind": "model-not-found", "message": "no model construction found from the entry point"}}
    first_error = None
    for candidate in candidates[:6]:
        cls = module.__dict__.get(candidate["class_name"])
        if isinstance(cls, type) and not issubclass(cls, torch.nn.Module):
            continue
        model = None
        notes = []
        started = time.monotonic()
        for device in ("meta", "cpu"):
            try:
                model, problems = _evaluate_call(torch, module, candidate, device)
                notes.extend(problems)
                break
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(exc, SystemExit):
                    raise
                if device == "meta":
                    notes.append(f"meta build failed ({type(exc).__name__}: {str(exc)[:120]}), built on CPU")
                    continue
                first_error = first_error or classify(exc, script, f"building {candidate['class_name']}")
        if model is None:
            continue
        if not isinstance(model, torch.nn.Module):
            continue
        out = {
            "status": "ok",
            "build_seconds": round(time.monotonic() - started, 3),
            "model": describe_model(torch, model, candidate),
            "build_notes": notes,
        }
        if forward:
            out["forward"] = run_forward(torch, module, candidate, model, script)
        return out
    if first_error is not None:
        return {"error": first_error}
    return {"error": {"kind": "model-not-found", "message": "no nn.Module construction found from the entry point"}}


def describe_model(torch, model, candidate: dict) -> dict:
    nn = torch.nn
    params = sum(p.numel() for p in model.parameters())
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    token_embedding = None
    for name in ("tok_emb", "wte", "embed_tokens", "embedding", "embed", "token_embedding", "tok_embeddings"):
        candidate_module = getattr(model, name, None)
        if isinstance(candidate_module, nn.Embedding):
            token_embedding = candidate_module
            break
    if token_embedding is None and embeddings:
        token_embedding = max(embeddings, key=lambda m: m.num_embeddings)
    vocab = token_embedding.num_embeddings if token_embedding is not None else _int_attr(model, ("vocab_size",))
    dim = _int_attr(model, ("model_dim", "dim", "d_model", "hidden_size", "n_embd"))
    if dim is None and token_embedding is not None:
        dim = token_embedding.embedding_dim
    unique_layers = _unique_layers(nn, model)
    effective = _effective_layers(model, unique_layers)
    tied = _tied(nn, model, token_embedding)
    return {
        "class": type(model).__name__,
        "params": int(params),
        "dim": dim,
        "layers": effective if effective is not None else unique_layers,
        "unique_layers": unique_layers,
        "vocab": vocab,
        "tied_embeddings": tied,
    }


def _int_attr(obj, names) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _unique_layers(nn, model) -> int | None:
    """Length of the largest ModuleList of same-class blocks directly on the model."""
    best = None
    for child in model.children():
        if isinstance(child, nn.ModuleList) and len(child) and len({type(m) for m in child}) == 1:
            if best is None or len(child) > best:
                best = len(child)
    return best


def _effective_layers(model, unique: int | None) -> int | None:
    """Block applications per forward for depth-recurrent models, where the code exposes them."""
    encoder = getattr(model, "encoder_indices", None)
    decoder = getattr(model, "decoder_indices", None)
    if isinstance(encoder, (list, tuple)) and isinstance(decoder, (list, tuple)):
        return len(encoder) + len(decoder)
    for name in ("layer_schedule", "layer_order", "schedule", "block_order", "loop_order", "virtual_layers"):
        value = getattr(model, name, None)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            return len(value)
    value = _int_attr(model, ("effective_layers", "num_effective_layers", "effective_depth", "num_virtual_layers"))
    if value is not None:
        return value
    return None


def _tied(nn, model, embedding) -> bool | None:
    flag = getattr(model, "tie_embeddings", None)
    if isinstance(flag, bool):
        return flag
    head = getattr(model, "lm_head", None)
    if embedding is None:
        return None
    if head is None:
        return True
    weight = getattr(head, "weight", None)
    return weight is embedding.weight


def run_forward(torch, module, candidate: dict, meta_model, script: str) -> dict:
    """Build on CPU and run one forward pass on a tiny random batch; is the loss finite?"""
    try:
        model, _ = _evaluate_call(torch, module, candidate, "cpu")
        model = model.float().eval()
        vocab = describe_model(torch, meta_model, candidate)["vocab"] or 256
        batch, length = 2, 32
        inputs = torch.randint(0, vocab, (batch, length))
        targets = torch.randint(0, vocab, (batch, length))
        with torch.no_grad():
            try:
                out = model(inputs, targets)
            except TypeError:
                out = model(inputs)
        loss = _loss_from(torch, out, targets)
        if loss is None:
            return {"ok": False, "message": f"forward returned {type(out).__name__}, no loss found"}
        value = float(loss)
        return {"ok": bool(torch.isfinite(loss).all()), "loss": value}
    except BaseException as exc:  # noqa: BLE001
        error = classify(exc, script, "forward")
        return {"ok": False, "kind": error["kind"], "message": error["message"]}


def _loss_from(torch, out, targets):
    if isinstance(out, (tuple, list)) and out:
        scalars = [o for o in out if torch.is_tensor(o) and o.ndim == 0]
        if scalars:
            return scalars[0]
        out = out[0]
    if isinstance(out, dict):
        out = out.get("loss", out.get("logits"))
    if not torch.is_tensor(out):
        return None
    if out.ndim == 0:
        return out
    if out.ndim == 3:
        return torch.nn.functional.cross_entropy(out.float().reshape(-1, out.shape[-1]), targets.reshape(-1))
    return None


def classify(exc: BaseException, script: str, stage: str) -> dict:
    shims = sys.modules["auditor_smoke_shims"]
    message = f"{type(exc).__name__}: {exc}"[:500]
    frame = _last_own_frame(exc, script)
    cause = exc
    while cause is not None and not isinstance(cause, shims.ShimUsedError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        exc = cause
        return {"kind": "missing-module", "message": f"{stage}: {exc}", "module": exc.module,
                "gpu_only": exc.gpu_only, "frame": frame}
    shimmed = getattr(shims, "LAST_FINDER", None)
    if "Shim" in str(exc) and shimmed is not None and shimmed.shimmed:
        # A shim object reached torch (a mamba layer's config, a kernel's output).
        names = sorted(shimmed.shimmed, key=lambda n: shimmed.shimmed[n] != "gpu-only")
        return {"kind": "missing-module", "message": f"{stage}: {message} (from shimmed {', '.join(names)})",
                "module": names[0], "gpu_only": shims.is_gpu_only(names[0]), "frame": frame}
    if isinstance(exc, ModuleNotFoundError):
        name = exc.name or ""
        return {"kind": "missing-module", "message": f"{stage}: {message}", "module": name.split(".")[0],
                "gpu_only": shims.is_gpu_only(name), "frame": frame}
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
        return {"kind": "memory", "message": f"{stage}: {message}", "frame": frame}
    text = str(exc)
    if ("CUDA" in text or "cuda" in text or "NVIDIA" in text or "GPU" in text) and not isinstance(exc, SyntaxError):
        return {"kind": "cuda-required", "message": f"{stage}: {message}", "frame": frame}
    if isinstance(exc, SyntaxError):
        return {"kind": "syntax", "message": f"{stage}: {message}", "frame": frame}
    if isinstance(exc, SystemExit):
        message = f"SystemExit({exc.code})"
    return {"kind": "exception", "message": f"{stage}: {message}", "frame": frame}


def _last_own_frame(exc: BaseException, script: str) -> str | None:
    last = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == script:
            last = f"line {line} in {frame.f_code.co_name}"
    return last


def _write_result(result: dict) -> None:
    data = json.dumps(result, default=str).encode()
    fd = int(os.environ.get("AUDITOR_RESULT_FD", "-1"))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    # Nothing of the auditor on sys.path: siblings of this file would shadow the submission's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    load_shims(spec["shims"])
    notes = confine(spec)
    try:
        result = run(spec)
    except BaseException as exc:  # noqa: BLE001 - anything left is the submission's doing
        result = {"status": "fail", "error": classify(exc, spec["script"], "smoke")}
    result["isolation"] = notes
    try:
        _write_result(result)
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip atexit handlers and threads the submission may have left


if __name__ == "__main__":
    main()
