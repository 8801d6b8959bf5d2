"""Data-parallel training (components/training/distributed.py + the loop under torchrun): two CPU
processes (gloo) over the same global batches end with one process's weights, resume exactly, and
write checkpoints and metrics once.

One torchrun launch (module fixture) runs every 2-process scenario: this file is also the worker
(``python -m torch.distributed.run ... -m tests.test_distributed OUT``, see ``_worker``); each rank
writes what it ended with under OUT/<scenario>/, and the tests compare that with a run in this
process. A second launch runs the torchrun entry, cascadapt/train_distributed.py, on speech. The weights agree to 1e-6, not bit for bit: one process sums the 8 items' gradients in one
reduction, two processes sum 4 and 4 and then add the halves, which rounds differently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from components.models.asr import ASRConfig, ConformerCTC
from components.training import distributed, loop
from components.training.distributed import SINGLE, DistInfo, shard
from components.training.loop import TrainConfig, train
from tests.test_training import make_problem, noisy_mse, val_mse

REPO = Path(__file__).resolve().parents[1]
WORLD = 2

# name: (items, global batch size, trunk frozen). 8-item batches; the last global batch of an epoch
# has 8, 7 (shards 4 + 3) or 1 item (rank 1's shard is empty: it runs a stand-in at scale 0).
CASES = {
    "even": (40, 8, False),
    "uneven": (39, 8, False),
    "tail_of_one": (33, 8, False),
    "frozen_trunk": (39, 8, True),
}
EPOCHS = 3


class TwoTasks(nn.Module):
    """A trunk and one head per task. Task 1 is rare (items 0-4), so a shard often has none of it and
    leaves head 1 out of its rank's graph while the other rank uses it: DDP's unused-parameter path.
    A global batch without task 1 leaves head 1 without a gradient everywhere (AdamW skips it)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 16)
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])


def task_problem(n: int, frozen: bool):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n + 16, 4, generator=g)
    y = x.sum(1, keepdim=True).sin() + 0.1 * torch.randn(n + 16, 1, generator=g)
    task = (torch.arange(n + 16) < 5).long()
    data = list(zip(x[:n], y[:n], task[:n]))
    torch.manual_seed(0)
    model = TwoTasks()
    model.trunk.requires_grad_(not frozen)
    return model, data, (x[n:], y[n:], task[n:])


def task_loss(model: TwoTasks, batch) -> tuple[torch.Tensor, dict]:
    """Mean squared error over the items, each through its own task's head (only the heads present)."""
    x, y, task = batch
    h = torch.tanh(model.trunk(x))
    total = sum(F.mse_loss(model.heads[t](h[task == t]), y[task == t], reduction="sum") for t in task.unique().tolist())
    return total / len(x), {"task1_share": float((task == 1).float().mean())}


def task_val(val):
    def fn(model):
        return {"val_loss": float(task_loss(model, val)[0])}

    return fn


def task_config(**kw) -> TrainConfig:
    base = dict(batch_size=8, lr=1e-2, threads=1, progress=False, patience=None, max_epochs=EPOCHS, log_every=1)
    return TrainConfig(**{**base, **kw})


def resume_config(folder: Path, steps: int, every: int) -> TrainConfig:
    """The resume scenario: tests.test_training's MLP with dropout and a loss jittered with numpy's and
    python's RNGs, so an exact resume needs every rank's RNG states back."""
    return TrainConfig(batch_size=8, lr=1e-2, threads=1, progress=False, patience=None, max_epochs=1000, log_every=1,
                       max_steps=steps, checkpoint_dir=str(folder), checkpoint_every=every)


# --------------------------------------------------------------------------- the worker (each rank)


def _worker(out: Path) -> None:
    info = distributed.init_from_env()
    assert info.world_size == WORLD and torch.distributed.get_backend() == "gloo"
    saves = []  # the steps this rank wrote checkpoints at
    real_save = loop.save_checkpoint

    def counted_save(directory, step, *args, **kwargs):
        saves.append(step)
        return real_save(directory, step, *args, **kwargs)

    loop.save_checkpoint = counted_save

    def finish(name: str, model: nn.Module, res, **counts) -> None:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / f"rank{info.rank}.safetensors"))
        history = [{k: v for k, v in r.items() if k != "seconds"} for r in res.history]
        summary = {"history": history, "steps": res.steps, "resumed_from": res.resumed_from, **counts}
        (folder / f"rank{info.rank}.json").write_text(json.dumps(summary))

    try:
        for name, (n, bs, frozen) in CASES.items():
            model, data, val = task_problem(n, frozen)
            if info.rank == 1:  # another init on rank 1: DDP must start every rank from rank 0's weights
                torch.nn.init.normal_(model.heads[0].weight)
            records, val_calls = [], []

            def counted_val(model, val_fn=task_val(val)):
                val_calls.append(1)
                return val_fn(model)

            res = train(model, task_loss, data, task_config(batch_size=bs), on_metrics=records.append, val_fn=counted_val)
            finish(name, model, res, on_metrics=len(records), val_calls=len(val_calls))

        saves.clear()
        for name, ckpt, steps, every, init_seed in [
            ("resume_ref", "ref_ckpt", 17, 10**6, 0),  # uninterrupted
            ("resume_first", "ckpt", 8, 3, 0),  # stopped in epoch 2 ...
            ("resume", "ckpt", 17, 3, 99),  # ... and resumed (from another init: the checkpoint must win)
        ]:
            model, data, val = make_problem(init_seed)
            res = train(model, noisy_mse, data, resume_config(out / ckpt, steps, every), val_fn=val_mse(val))
            finish(name, model, res)
        (out / f"saves{info.rank}.json").write_text(json.dumps(saves))
    finally:
        distributed.cleanup()


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (a free port on this machine), checked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    torchrun("-m", "tests.test_distributed", str(out))
    return out


def _ranks(out: Path, name: str) -> list[tuple[dict, dict]]:
    return [(load_file(out / name / f"rank{r}.safetensors"), json.loads((out / name / f"rank{r}.json").read_text())) for r in range(WORLD)]


# --------------------------------------------------------------------------- tests


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_end_with_one_process_weights(two_ranks, name):
    n, bs, frozen = CASES[name]
    model, data, val = task_problem(n, frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alone = train(model, task_loss, data, task_config(batch_size=bs), val_fn=task_val(val))
    (w0, r0), (w1, r1) = _ranks(two_ranks, name)

    assert w0.keys() == w1.keys() == model.state_dict().keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # every rank returns the same (best) weights
    for k, v in model.state_dict().items():
        assert torch.allclose(w0[k], v, rtol=0, atol=1e-6), (k, (w0[k] - v).abs().max())
    changed = {k for k in before if not torch.equal(before[k], w0[k])}
    assert changed == set(before) - ({"trunk.weight", "trunk.bias"} if frozen else set())

    assert r0["history"] == r1["history"]  # the same records and decisions on both ranks
    assert r0["steps"] == alone.steps == EPOCHS * -(-n // bs)
    for mine, ref in zip(r0["history"], alone.history, strict=True):
        assert mine.keys() == {k for k in ref if k != "seconds"}
        for k in ("train_loss", "train_task1_share", "val_loss"):  # global-batch means, not rank 0's shard
            assert mine[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
    assert (r0["on_metrics"], r1["on_metrics"]) == (r0["steps"] + EPOCHS, 0)  # step records + epoch records, rank 0 only
    assert (r0["val_calls"], r1["val_calls"]) == (EPOCHS, 0)


def test_two_process_resume_is_bit_identical_and_rank0_writes(two_ranks):
    (ref0, ref_r0), (ref1, _) = _ranks(two_ranks, "resume_ref")
    (res0, res_r0), (res1, res_r1) = _ranks(two_ranks, "resume")
    assert res_r0["resumed_from"] == res_r1["resumed_from"] == 8 and res_r0["steps"] == ref_r0["steps"] == 17
    for w in (ref1, res0, res1):  # dropout and jitter replay on both ranks from the saved RNG states
        assert all(torch.equal(ref0[k], w[k]) for k in ref0)
    assert res_r0["history"] == ref_r0["history"] == res_r1["history"]

    # Only rank 0 writes, at each epoch end (5 batches) and every 3 steps within one: the reference at
    # 5, 10, 15 and its last step 17; the first run at 3, 5, 6, 8; the resumed run at 9, 10, 12, 15, 17.
    saves = [json.loads((two_ranks / f"saves{r}.json").read_text()) for r in range(WORLD)]
    assert saves == [[5, 10, 15, 17, 3, 5, 6, 8, 9, 10, 12, 15, 17], []]
    ckpt, ref = loop.load_checkpoint(two_ranks / "ckpt"), loop.load_checkpoint(two_ranks / "ref_ckpt")
    assert ckpt.step == ref.step == 17 and len(ckpt.state["rng_ranks"]) == WORLD
    assert all(torch.equal(ckpt.model_state[k], ref.model_state[k]) for k in ref.model_state)  # final, not best, weights
    assert not torch.equal(ckpt.state["rng_ranks"][0]["torch"], ckpt.state["rng_ranks"][1]["torch"])  # a stream per rank
    assert sorted(p.name for p in (two_ranks / "ckpt").iterdir()) == [
        "ckpt-00000015.pt", "ckpt-00000015.safetensors", "ckpt-00000017.pt", "ckpt-00000017.safetensors", "latest.json",
    ]


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_torchrun_entry_trains_the_asr_on_synthesized_speech(tmp_path):
    # 8 utterances: 6 train in global batches of 3 (shards 2 + 1), 2 validate; 2 epochs of 2 steps.
    proc = torchrun("-m", "cascadapt.train_distributed", "--demo", "--utterances", "8", "--epochs", "2", "--batch-size", "3", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "history.json").read_text())
    assert summary["world_size"] == WORLD and summary["steps"] == 4 and summary["resumed_from"] is None
    assert [r["epoch"] for r in summary["history"]] == [1, 2] and summary["best_epoch"] in (1, 2)
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in printed] == [1, 2]  # epoch records, from rank 0 only
    asr = ConformerCTC(ASRConfig(**summary["asr_config"]))
    asr.load_state_dict(load_file(tmp_path / "asr.safetensors"))  # strict: every weight is there
    assert loop.load_checkpoint(tmp_path / "checkpoints").step == 4


@pytest.mark.parametrize(
    ("n", "world", "sizes"),
    [(8, 2, [4, 4]), (7, 2, [4, 3]), (1, 2, [1, 0]), (10, 4, [3, 3, 2, 2]), (3, 4, [1, 1, 1, 0]), (5, 1, [5])],
)
def test_shard_splits_a_global_batch_into_contiguous_slices(n, world, sizes):
    batch = [10 + i for i in range(n)]
    parts = [shard(batch, r, world) for r in range(world)]
    assert [len(p) for p in parts] == sizes
    assert [i for p in parts for i in p] == batch  # contiguous, in order, nothing lost or repeated


def test_alone_everything_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is SINGLE and not torch.distributed.is_initialized()
    assert SINGLE == DistInfo(0, 1, 0) and SINGLE.is_main and not SINGLE.distributed
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: no group either
    assert distributed.init_from_env() is SINGLE and not torch.distributed.is_initialized()
    values = {"loss": 1.5, "x": 2.0}
    assert distributed.weighted_mean(values, 3, torch.device("cpu")) is values
    assert distributed.broadcast_object("a") == "a" and distributed.gather_objects("a") == ["a"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
