"""Multi-task adaptation of the cascade's ASR: tasks from manifest columns, every task's adapter trained
in one run, a new task added to a trained adapter, per-task scores, and the comparison of methods.

    splits, tasks, new = assign_tasks({"train": tr, "nas_val": va, "test": te}, by=["speaker", "noise"])
    train_task_adapters(cascade, HRAConfig(target_modules=["asr:@layer"]), tasks, train_ds, val_ds, cfg)
    bundle = TaskAdapters.export_adapter(cascade, "out/hra", system="hra")
"""

from components.multitask.bundle import ADAPTER, TaskAdapters
from components.multitask.evaluate import evaluate_tasks
from components.multitask.summary import comparison_html, parameters_html, parameters_vs_tasks, pick_winner, summarize
from components.multitask.tasks import TASK, assign_tasks, task_names
from components.multitask.train import NEW_TASK_VARIANTS, add_task, finetune_per_task, routed_asr_loss, train_task_adapters

__all__ = [
    "ADAPTER", "NEW_TASK_VARIANTS", "TASK", "TaskAdapters", "add_task", "assign_tasks", "comparison_html", "evaluate_tasks", "finetune_per_task",
    "parameters_html", "parameters_vs_tasks", "pick_winner", "routed_asr_loss", "summarize", "task_names", "train_task_adapters",
]
