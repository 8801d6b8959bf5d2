"""python -m components.adapters: every registered method and its config fields."""

from components.adapters import METHODS, describe

for name in sorted(METHODS):
    print(describe(METHODS[name].config_cls), end="\n\n")
