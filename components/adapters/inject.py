"""Apply an adapter to any module tree by target patterns, and take it off again.

    method = add_adapter(model, LoraConfig(target_modules=["@attention"], r=8), name="lora", tasks=["slurp"])
    freeze_backbone(model)            # only adapter parameters train
    method.set_task("slurp")          # or a LongTensor of task ids (B,) per batch
    ...
    remove_adapter(model, "lora")     # the original modules, exactly as they were

The method object lives at ``model.adapters[name]``; the wrapped layers at
their targets' paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

from components.adapters.attention import Attention, set_submodule
from components.adapters.base import AdapterLayer, AdapterMethod, module_device
from components.adapters.config import AdapterConfig
from components.adapters.profiles import expand_role, glob_regex, is_time_first
from components.adapters.registry import method_for

ADAPTERS = "adapters"  # attribute of the model that holds the applied methods


def _candidate_paths(model: nn.Module) -> list[str]:
    """Module paths a pattern may name: not inside an applied adapter's own parameters."""
    skip = (f"{ADAPTERS}.",)
    return [p for p, _ in model.named_modules() if p and not p.startswith(skip) and ".tasks." not in p + "." and ".shared." not in p + "."]


def find_targets(model: nn.Module, patterns: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """(path, module) matched by any pattern, in model order; ValueError names a pattern that matches nothing."""
    paths = _candidate_paths(model)
    chosen: set[str] = set()
    for pattern in patterns:
        globs = expand_role(model, pattern) if "@" in pattern else [pattern]
        hits = set().union(*(_match(glob, paths) for glob in globs))
        if not hits:
            close = difflib.get_close_matches(pattern, paths, n=5, cutoff=0.5)
            raise ValueError(f"target pattern {pattern!r} matches no module of {type(model).__name__}" + (f"; close: {close}" if close else ""))
        chosen |= hits
    return [(p, m) for p, m in model.named_modules() if p in chosen]


def _match(glob: str, paths: list[str]) -> set[str]:
    """A glob with '*' matches whole paths; a plain name matches itself or any path ending in '.name'."""
    if glob == "":
        return {""}
    if "*" in glob:
        regex = glob_regex(glob)
        return {p for p in paths if regex.match(p)}
    if glob in paths:
        return {glob}
    return {p for p in paths if p.endswith("." + glob)}


def add_adapter(model: nn.Module, config: AdapterConfig, name: str = "default", tasks: Iterable[str] = ("default",)) -> AdapterMethod:
    """Wrap the modules ``config.target_modules`` names; returns the method (also ``model.adapters[name]``)."""
    config.validate()
    if isinstance(model, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise TypeError(f"add_adapter needs a model that is not a {type(model).__name__} (it would run the adapters as a layer); wrap it in a module")
    holder = getattr(model, ADAPTERS, None)
    if holder is not None and not isinstance(holder, nn.ModuleDict):
        raise ValueError(f"{type(model).__name__} already has an attribute {ADAPTERS!r} that is not an adapter holder")
    if holder is not None and name in holder:
        raise ValueError(f"adapter {name!r} already applied; remove_adapter(model, {name!r}) first or pick another name")
    method = method_for(config)(config, name)
    targets = [t for path, module in find_targets(model, config.target_modules) for t in method.select(model, path, module)]
    if any(not path for path, _ in targets):
        raise ValueError(f"{config.method} cannot replace the root module; apply it to a model that contains the backbone")
    method.prepare(targets)
    for depth, (path, module) in enumerate(targets):
        batch_dim = 1 if is_time_first(model, path) else config.batch_dim
        layer = method.wrap(path, module, depth, batch_dim)
        layer.train(module.training).to(module_device(module))  # new parameters join the module's mode and device
        if layer is not module:
            set_submodule(model, path, layer)
            method.layers[path] = layer
    if holder is None:
        holder = nn.ModuleDict()
        model.add_module(ADAPTERS, holder)
    holder[name] = method.to(_device(model))
    for task in tasks:
        method.add_task(task)
    return method


def get_adapter(model: nn.Module, name: str = "default") -> AdapterMethod:
    holder = getattr(model, ADAPTERS, None)
    if holder is None or name not in holder:
        raise KeyError(f"no adapter {name!r} on {type(model).__name__}; applied: {list(holder or [])}")
    return holder[name]


def remove_adapter(model: nn.Module, name: str = "default") -> None:
    """Undo add_adapter: every wrapped module goes back in place (merged weights are unmerged first)."""
    method = get_adapter(model, name)
    if hasattr(method, "unmerge"):
        method.unmerge()
    for path, layer in method.layers.items():
        _unwrap(model, path, layer)
    method.detach(model)
    del getattr(model, ADAPTERS)[name]
    if not len(getattr(model, ADAPTERS)):
        delattr(model, ADAPTERS)
    for path, module in list(model.named_modules()):
        if isinstance(module, Attention) and module.kv_hook is None and not any(isinstance(m, AdapterLayer) for m in module.modules()):
            set_submodule(model, path, module.restore())


def _unwrap(model: nn.Module, path: str, layer: AdapterLayer) -> None:
    """Put layer.base where layer is. Found by identity, not by path: adapters applied later may have moved it."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is layer:
                setattr(parent, name, layer.base)
                return
    raise RuntimeError(f"adapter layer first applied at '{path}' is no longer in the model")


def applied_methods(model: nn.Module) -> list[AdapterMethod]:
    """The methods of the adapter layers anywhere inside ``model`` (a submodule of the model they were
    applied to, too), once each: what a decoder that drops finished rows narrows (AdapterMethod.keep_rows)."""
    methods = {id(m.method): m.method for m in model.modules() if isinstance(m, AdapterLayer)}
    return list(methods.values())


def freeze_backbone(model: nn.Module) -> None:
    """requires_grad: True for the adapters' trainable parameters, False for everything else."""
    adapter_params = {id(p): method.trains(n) for method in getattr(model, ADAPTERS, {}).values() for n, p in adapter_named_parameters(model, method)}
    for p in model.parameters():
        p.requires_grad_(adapter_params.get(id(p), False))


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """While the context lasts, batch norms whose own parameters are all frozen run in eval mode even under
    ``model.train()``: their running statistics stay the backbone's, so a saved adapter adapts exactly the
    backbone it was trained on (and the other tasks' outputs do not drift)."""
    frozen = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False))]
    handles = [m.register_forward_pre_hook(_run_in_eval_mode) for m in frozen]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run_in_eval_mode(module: nn.Module, args: tuple) -> None:
    module.train(False)  # a pre-hook that returned the module would replace the forward's inputs


def adapter_named_parameters(model: nn.Module, method: AdapterMethod) -> list[tuple[str, nn.Parameter]]:
    """(name relative to the model, parameter) of everything ``method`` added."""
    out = [(f"{ADAPTERS}.{method.adapter_name}.{n}", p) for n, p in method.named_parameters()]
    for path, layer in method.layers.items():
        out += [(f"{path}.tasks.{n}", p) for n, p in layer.tasks.named_parameters()]
        out += [(f"{path}.{n}", p) for n, p in layer.named_parameters() if not n.startswith(("base.", "tasks."))]
    return out


def _device(model: nn.Module):
    return next((p.device for p in model.parameters()), None) or "cpu"
