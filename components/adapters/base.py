"""The two classes every method builds on.

AdapterMethod: one applied adapter (``model.adapters[name]``): its config,
task router, shared parameters (``shared``) and method-level per-task
parameters (``tasks[task]``), and the layers it wrapped.

AdapterLayer: replaces one target module; ``base`` is the original module,
``tasks[task]`` holds that task's parameters at this layer. Parameter names
therefore say who owns them: ``...tasks.<task>...`` is one task's, anything
else inside an adapter is shared; save/load and accounting rely on it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from components.adapters.config import AdapterConfig
from components.adapters.tasks import TaskRouter, per_task


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    """The module's main input: its first positional argument, or the first tensor keyword."""
    if args:
        return args[0]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise ValueError("adapted module was called without a tensor input")


def module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    weight = getattr(module, "weight", None)  # a ProjectionSlice owns no parameter but views one
    return weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")


def output_features(module: nn.Module) -> int:
    """Width of a module's main output: out_features, embed_dim, a GRU/LSTM's hidden size, or its last Linear's."""
    if hasattr(module, "out_features"):
        return module.out_features
    if isinstance(module, nn.MultiheadAttention) or hasattr(module, "mha"):
        return getattr(module, "mha", module).embed_dim
    if isinstance(module, nn.RNNBase):
        return module.hidden_size * (2 if module.bidirectional else 1)
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the output width of {type(module).__name__}: it has no Linear")
    return linears[-1].out_features


def map_first(output: Any, fn) -> Any:
    """Apply fn to a module's main output: the tensor itself, or the first item of a tuple."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(f"cannot adapt a module output of type {type(output).__name__}")


class AdapterLayer(nn.Module):
    def __init__(self, base: nn.Module, method: "AdapterMethod", path: str, depth: int, batch_dim: int) -> None:
        super().__init__()
        self.base = base
        self.tasks = nn.ModuleDict()
        self.path, self.depth, self.batch_dim = path, depth, batch_dim
        self._method = [method]  # in a list: the method lives at model.adapters[name], not under each layer

    @property
    def method(self) -> "AdapterMethod":
        return self._method[0]

    @property
    def adapter_config(self) -> AdapterConfig:  # not `config`: a wrapped HF model keeps its own .config
        return self.method.config

    def new_task(self, task: str) -> nn.Module:
        """This layer's parameters for a new task."""
        raise NotImplementedError

    def add_task(self, task: str) -> None:
        self.tasks[task] = self.new_task(task).to(module_device(self.base))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.base(*args, **kwargs)
        if not self.method.active:
            return out
        return map_first(out, lambda y: self.adapt(y, args, kwargs))

    def adapt(self, output: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """The adapted output; default: output + delta(task, output) per task of the batch."""
        return output + per_task(self.method.router, output, self.batch_dim, self.delta)

    def delta(self, task: str, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"method={self.method.config.method}, tasks={list(self.tasks)}"


class AdapterMethod(nn.Module):
    config_cls: ClassVar[type[AdapterConfig]]
    layer_cls: ClassVar[type[AdapterLayer]]
    accepts: ClassVar[tuple[type, ...]] = (nn.Module,)  # module types a target may be
    family: ClassVar[str | None] = None  # methods of one family share the layout of their shared state (load_shared)

    def __init__(self, config: AdapterConfig, name: str) -> None:
        super().__init__()
        self.config, self.adapter_name = config, name
        self.router = TaskRouter()
        self.active = True
        self.shared = nn.ModuleDict()  # parameters every task uses
        self.tasks = nn.ModuleDict()  # method-level parameters of one task
        self.layers: dict[str, AdapterLayer] = {}

    # -- building: inject.add_adapter calls select, prepare, wrap (per target), add_task

    def select(self, model: nn.Module, path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        """The modules to wrap for one matched target (default: the target itself)."""
        if not isinstance(module, self.accepts):
            names = ", ".join(t.__name__ for t in self.accepts)
            raise TypeError(f"{self.config.method} adapts {names}; target '{path}' is a {type(module).__name__}")
        return [(path, module)]

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        """Build shared parameters once all targets are known."""

    def wrap(self, path: str, module: nn.Module, depth: int, batch_dim: int) -> AdapterLayer:
        return self.layer_cls(module, self, path, depth, batch_dim)

    def detach(self, model: nn.Module) -> None:
        """Undo anything besides the wrapped layers (remove_adapter calls it)."""

    def new_task(self, task: str) -> nn.Module | None:
        """Method-level parameters of a new task (None: all of them live in the layers)."""
        return None

    # -- the running batch's state: a decoder that drops finished rows narrows it, then puts it back

    def batch_state(self) -> Any:
        """What this method holds about the running batch (the per-row task ids), to put back later."""
        return self.router.current

    def set_batch_state(self, state: Any) -> None:
        self.router.current = state

    def keep_rows(self, index: torch.Tensor) -> None:
        """Narrow the running batch's per-row state to its rows ``index`` (B',)."""
        if isinstance(self.router.current, torch.Tensor):
            self.router.current = self.router.current.index_select(0, index.to(self.router.current.device))

    # -- tasks

    def add_task(self, task: str) -> None:
        """A new task: new per-task parameters; the other tasks' are untouched."""
        self.router.add(task)
        module = self.new_task(task)
        if module is not None:
            self.tasks[task] = module.to(self._device())
        for layer in self.layers.values():
            layer.add_task(task)

    def remove_task(self, task: str) -> None:
        """Drop ``task``'s parameters (a server evicting a task it may load again); the others are untouched."""
        self.router.id(task)
        if any(getattr(layer, "merged", None) == task for layer in self.layers.values()):
            raise RuntimeError(f"{self.config.method}: task {task!r} is merged into the base weights; unmerge it first")
        self.router.names.remove(task)
        if isinstance(self.router.current, torch.Tensor) or self.router.current == task:
            self.router.current = self.router.names[0] if self.router.names else None  # ids shift: set the batch's tasks again
        for holder in [self.tasks, *(layer.tasks for layer in self.layers.values())]:
            if task in holder:
                del holder[task]

    def set_task(self, task) -> None:
        self.router.set(task)

    @contextmanager
    def task(self, task):
        previous = self.router.current
        self.router.set(task)
        try:
            yield self
        finally:
            self.router.current = previous

    @property
    def task_names(self) -> list[str]:
        return list(self.router.names)

    def trains(self, name: str) -> bool:
        """Whether parameter ``name`` (relative to the model) trains; methods that tune a subset override."""
        return True

    def _device(self) -> torch.device:
        return next((module_device(layer.base) for layer in self.layers.values()), torch.device("cpu"))
