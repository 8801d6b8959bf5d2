"""The base of every adapter config: which modules to adapt, documented fields.

Every method's config is a dataclass that subclasses ``AdapterConfig`` and
documents each field with ``field(metadata={"help": ...})``; ``describe()``
prints them, so ``python -m components.adapters`` can list every knob.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (lists and dicts get a default_factory)."""
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, str):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class AdapterConfig:
    method: ClassVar[str] = ""  # the registry name; set by each subclass

    target_modules: list[str] = help_field(
        [],
        "Modules to adapt. Each entry is a glob over dotted module names ('encoder.conformer_layers.*.ffn2'), "
        "a name suffix ('ffn2' matches every module whose name ends with '.ffn2'), or a role of a known "
        "backbone ('@attention', '@ffn', '@layer', '@linear', '@encoder'; see profiles.py). Every entry must match.",
    )
    batch_dim: int = help_field(
        0, "Batch dimension of the adapted modules' tensors; modules inside a time-first backbone (torchaudio Conformer layers) use 1 whatever this says."
    )

    def validate(self) -> None:
        """Raise ValueError naming the field that is wrong."""
        if not self.target_modules:
            raise ValueError(f"{type(self).__name__}.target_modules is empty: name the modules to adapt")
        for name in ("r", "reduction_factor", "n_skills", "n_splits", "num_virtual_tokens", "hidden"):
            value = getattr(self, name, None)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict:
        return {"method": self.method, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        data = {k: v for k, v in data.items() if k != "method"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields are {sorted(known)}")
        return cls(**data)


def describe(config_cls: type[AdapterConfig]) -> str:
    """One line a field: name, default, help."""
    lines = [f"{config_cls.method}: {(config_cls.__doc__ or '').strip().splitlines()[0] if config_cls.__doc__ else ''}"]
    for f in fields(config_cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        lines.append(f"  {f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)
