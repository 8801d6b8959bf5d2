"""ARTE: a teacher proposes labelled spoken examples, the student's measured gain ranks them, and the
teacher is aligned to what helps. templates.py is the teacher's raw material: SLURP annotation templates
and the fillers to re-fill them with. Plain Python."""

from components.arte.templates import GENERATED_ID_BASE, Slot, Template, fill, fillers_from, parse_annotation, templates_from

__all__ = ["GENERATED_ID_BASE", "Slot", "Template", "fill", "fillers_from", "parse_annotation", "templates_from"]
