"""The method registry: name -> AdapterMethod subclass. Refuses bad or duplicate entries."""

from __future__ import annotations

import dataclasses
import re

from components.adapters.config import AdapterConfig

METHODS: dict[str, type] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(ValueError):
    pass


def register(method_cls: type) -> type:
    """Class decorator: add an AdapterMethod subclass under ``method_cls.config_cls.method``."""
    from components.adapters.base import AdapterMethod

    if not (isinstance(method_cls, type) and issubclass(method_cls, AdapterMethod)):
        raise RegistryError(f"{method_cls!r} is not an AdapterMethod subclass")
    config_cls = getattr(method_cls, "config_cls", None)
    if not (isinstance(config_cls, type) and issubclass(config_cls, AdapterConfig) and dataclasses.is_dataclass(config_cls)):
        raise RegistryError(f"{method_cls.__name__}.config_cls must be an AdapterConfig dataclass, got {config_cls!r}")
    name = config_cls.method
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistryError(f"{config_cls.__name__}.method must be a lower_snake_case name, got {name!r}")
    if name in METHODS:
        raise RegistryError(f"adapter method {name!r} is already registered (by {METHODS[name].__name__})")
    undocumented = [f.name for f in dataclasses.fields(config_cls) if not f.metadata.get("help")]
    if undocumented:
        raise RegistryError(f"{config_cls.__name__} fields without help text: {undocumented}")
    METHODS[name] = method_cls
    return method_cls


def method_for(config: AdapterConfig) -> type:
    name = type(config).method
    if name not in METHODS:
        raise KeyError(f"no adapter method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def config_class(name: str) -> type[AdapterConfig]:
    if name not in METHODS:
        raise KeyError(f"no adapter method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name].config_cls
