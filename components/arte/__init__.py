"""ARTE: a teacher proposes labelled spoken examples, the student's measured gain ranks them, and the
teacher is aligned to what helps. Plain Python and torch.

    templates.py  SLURP annotation templates and the fillers to re-fill them with
    policy.py     the teacher's sampling policy (intent, voice, noise, SNR) and its DPO alignment to preferences
    teacher.py    examples proposed by the policy: a SLURP record and the choices that made it
    speech.py     the examples spoken (corpus builder) with the voice, noise and SNR they chose
    student.py    the cascade as the student: a short update on a spoken batch, its loss on each preference item
    preferences.py  the student's gain from each candidate batch, the pairs, the discriminative items
    loop.py       rounds of propose -> measure the student's gains -> align the teacher
    plots.py      the policy before and after alignment, as a dashboard page
"""

from components.arte.loop import ArteConfig, tailor
from components.arte.policy import AlignConfig, SamplingPolicy, align
from components.arte.preferences import discriminative_items, measure_gains, preference_pairs
from components.arte.teacher import Example, Teacher
from components.arte.templates import GENERATED_ID_BASE, Slot, Template, fill, fillers_from, parse_annotation, templates_from

__all__ = [
    "GENERATED_ID_BASE", "AlignConfig", "ArteConfig", "Example", "SamplingPolicy", "Slot", "Teacher", "Template", "align", "discriminative_items", "fill", "fillers_from",
    "measure_gains", "parse_annotation", "preference_pairs", "tailor", "templates_from",
]
