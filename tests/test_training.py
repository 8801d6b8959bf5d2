"""The shared training loop: optimisation, clipping, freezing, early stopping,
metrics, and bit-exact resume from checkpoints (also after a real SIGKILL)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from components.training.checkpoint import load_checkpoint, save_checkpoint
from components.training.loop import TrainConfig, resolve_device, to_device, train

REPO = Path(__file__).resolve().parents[1]


def make_problem(init_seed: int = 0, n: int = 40, dim: int = 4):
    """A noisy linear regression (n samples; 5 batches of 8) and a small MLP with dropout."""
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(dim, 1, generator=g)
    x = torch.randn(n + 16, dim, generator=g)
    y = x @ w + 0.1 * torch.randn(n + 16, 1, generator=g)
    data = list(zip(x[:n], y[:n]))
    val = (x[n:], y[n:])
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
    return model, data, val


def noisy_mse(model, batch):
    """MSE against targets jittered with numpy and python RNGs, so that an exact
    resume needs every RNG state (dropout uses torch's) restored."""
    x, y = batch
    jitter = 0.01 * float(np.random.randn()) + 0.01 * random.random()
    loss = F.mse_loss(model(x), y + jitter)
    return loss, {"jitter": jitter}


def val_mse(val):
    def fn(model):
        return {"val_loss": F.mse_loss(model(val[0]), val[1]).item()}

    return fn


def config(**kw) -> TrainConfig:
    base = dict(batch_size=8, lr=1e-2, threads=1, progress=False, patience=None, max_epochs=1000, log_every=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_loss_decreases_and_epoch_metrics_reach_callback():
    model, data, val = make_problem()
    records = []
    cfg = config(max_epochs=8, log_every=100)
    res = train(model, noisy_mse, data, cfg, val_fn=val_mse(val), on_metrics=records.append)
    epochs = [r for r in records if "train_loss" in r]
    assert len(res.history) == 8 and epochs == res.history
    assert {"epoch", "step", "train_loss", "train_jitter", "val_loss", "lr", "seconds"} <= set(epochs[0])
    assert [r["epoch"] for r in epochs] == list(range(1, 9)) and epochs[-1]["step"] == 40
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert res.best_metric == min(r["val_loss"] for r in epochs) and res.steps == 40
    assert not any("grad_norm" in r for r in records)  # log_every=100: no step records


def test_grad_clip_bounds_the_update():
    model, data, _ = make_problem()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    steps = []

    def huge(model, batch):
        return 1e10 * F.mse_loss(model(batch[0]), batch[1])

    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    train(model, huge, data, config(max_steps=1, grad_clip=1.0), optimizer=sgd, on_metrics=steps.append)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.isfinite(after).all()
    assert steps[0]["grad_norm"] > 1e6  # the norm before clipping is reported
    assert (after - before).norm() <= 0.1 * 1.0 + 1e-5  # lr * clipped norm


def test_only_trainable_parameters_change():
    model, data, _ = make_problem()
    model[0].requires_grad_(False)
    frozen = {k: v.clone() for k, v in model[0].state_dict().items()}
    head = model[3].weight.detach().clone()
    train(model, noisy_mse, data, config(max_steps=6))
    assert _equal_states(frozen, model[0].state_dict())
    assert not torch.equal(head, model[3].weight)


def test_early_stopping_restores_best_weights():
    model, data, _ = make_problem()
    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])
    snapshots = []

    def val_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_loss": next(scores)}

    res = train(model, noisy_mse, data, config(patience=2), val_fn=val_fn)
    assert res.stopped_early and len(res.history) == 4
    assert res.best_epoch == 2 and res.best_metric == 2.0
    assert _equal_states(model.state_dict(), snapshots[1])
    assert not _equal_states(model.state_dict(), snapshots[3])
    assert model.training  # back in train mode after validation


def _reference(tmp_path: Path, steps: int):
    """An uninterrupted run; its checkpoint folder holds the final (not best) state."""
    model, data, val = make_problem()
    cfg = config(max_steps=steps, checkpoint_dir=str(tmp_path / "ref"), checkpoint_every=10**6)
    res = train(model, noisy_mse, data, cfg, val_fn=val_mse(val))
    return model, res, load_checkpoint(tmp_path / "ref")


def _resume_to(folder: Path, steps: int, **kw):
    model, data, val = make_problem(init_seed=99)  # different init: the checkpoint must win
    cfg = config(max_steps=steps, checkpoint_dir=str(folder), checkpoint_every=3, **kw)
    res = train(model, noisy_mse, data, cfg, val_fn=val_mse(val))
    return model, res, load_checkpoint(folder)


def _assert_same_run(a, b):
    (model_a, res_a, ck_a), (model_b, res_b, ck_b) = a, b
    assert _equal_states(model_a.state_dict(), model_b.state_dict())  # best weights
    assert _equal_states(ck_a.model_state, ck_b.model_state)  # final weights
    assert ck_a.step == ck_b.step == res_a.steps == res_b.steps
    assert _strip_seconds(res_a.history) == _strip_seconds(res_b.history)
    assert (res_a.best_epoch, res_a.best_metric) == (res_b.best_epoch, res_b.best_metric)
    opt_a, opt_b = ck_a.state["optimizer"]["state"], ck_b.state["optimizer"]["state"]
    assert all(_equal_states(opt_a[i], opt_b[i]) for i in opt_a)


def test_resume_from_max_steps_is_bit_identical(tmp_path):
    # 5 batches an epoch, a checkpoint every 3 steps: stop at 8 (mid epoch 2), go on to 17.
    folder = tmp_path / "run"
    model, data, val = make_problem()
    cfg = config(max_steps=8, checkpoint_dir=str(folder), checkpoint_every=3)
    first = train(model, noisy_mse, data, cfg, val_fn=val_mse(val))
    assert first.steps == 8 and first.history[-1]["partial"] and len(first.history) == 2
    resumed = _resume_to(folder, 17)
    assert resumed[1].resumed_from == 8 and len(resumed[1].history) == 4
    _assert_same_run(resumed, _reference(tmp_path, 17))


def test_a_checkpoint_holds_only_what_trains_and_resumes_bit_identical(tmp_path):
    """First layer frozen (as a backbone under an adapter): its weights stay out of the checkpoint, the
    run resumes exactly, and the best weights restore only what trained."""

    def frozen_first(init_seed: int = 0):
        model, data, val = make_problem(init_seed)
        model[0].requires_grad_(False)
        return model, data, val

    folder = tmp_path / "run"
    model, data, val = frozen_first()
    frozen = model[0].weight.detach().clone()
    train(model, noisy_mse, data, config(max_steps=8, checkpoint_dir=str(folder), checkpoint_every=3), val_fn=val_mse(val))
    ckpt = load_checkpoint(folder)
    assert set(ckpt.model_state) == {"3.weight", "3.bias"} and set(ckpt.best_state) == {"3.weight", "3.bias"}
    resumed, _, _ = frozen_first()
    res = train(resumed, noisy_mse, data, config(max_steps=17, checkpoint_dir=str(folder), checkpoint_every=3), val_fn=val_mse(val))
    reference, _, _ = frozen_first()
    ref = train(reference, noisy_mse, data, config(max_steps=17, checkpoint_dir=str(tmp_path / "ref"), checkpoint_every=3), val_fn=val_mse(val))
    assert res.resumed_from == 8 and _strip_seconds(res.history) == _strip_seconds(ref.history)
    assert _equal_states(resumed.state_dict(), reference.state_dict()) and torch.equal(resumed[0].weight, frozen)


def test_a_checkpoint_of_other_parameters_is_refused_by_folder(tmp_path):
    """Parameters changed since the checkpoint (a layer more, weights tied or untied): a clear error, not torch's."""
    folder = tmp_path / "run"
    model, data, val = make_problem()
    train(model, noisy_mse, data, config(max_steps=3, checkpoint_dir=str(folder), checkpoint_every=3))
    model, _, _ = make_problem()
    model.extra = nn.Linear(1, 1)
    with pytest.raises(ValueError, match=f"checkpoint in {folder} .* does not fit this model's parameters"):
        train(model, noisy_mse, data, config(max_steps=6, checkpoint_dir=str(folder), checkpoint_every=3))


def test_a_checkpoint_of_other_optimizer_settings_is_refused(tmp_path):
    """A changed learning rate must not silently continue (or skip, when finished) the old run."""
    folder = tmp_path / "run"
    model, data, _ = make_problem()
    train(model, noisy_mse, data, config(max_steps=3, checkpoint_dir=str(folder), checkpoint_every=3))
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match=r"other settings \(\{'lr': '.* -> 0.5'\}\); move it away"):
        train(model, noisy_mse, data, config(max_steps=6, lr=0.5, checkpoint_dir=str(folder), checkpoint_every=3))
    assert sorted(p.name for p in folder.glob("ckpt-*.pt")) == ["ckpt-00000003.pt"]  # left as it was


def test_checkpoints_load_without_pickle_and_survive_partial_files(tmp_path):
    folder = tmp_path / "run"
    model, data, val = make_problem()
    cfg = config(max_steps=8, checkpoint_dir=str(folder), checkpoint_every=3)
    train(model, noisy_mse, data, cfg, val_fn=val_mse(val))
    assert sorted(p.name for p in folder.glob("ckpt-*")) == [
        "ckpt-00000006.pt", "ckpt-00000006.safetensors", "ckpt-00000008.pt", "ckpt-00000008.safetensors",
    ]
    state = torch.load(folder / "ckpt-00000008.pt", weights_only=True)
    assert state["progress"]["global_step"] == 8 and state["progress"]["batch_in_epoch"] == 3
    assert any(k.startswith("best/") for k in load_file(folder / "ckpt-00000008.safetensors"))
    assert json.loads((folder / "latest.json").read_text())["step"] == 8

    # A write killed half way leaves a temp file: ignored.
    (folder / ".ckpt-00000009.x1.tmp.pt").write_bytes(b"\x80garbage")
    (folder / ".ckpt-00000009.x2.tmp.safetensors").write_bytes(b"junk")
    assert load_checkpoint(folder).step == 8
    # Even a broken newest checkpoint and pointer fall back to the last complete one.
    newest = folder / "ckpt-00000008.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    (folder / "latest.json").write_text("{")
    assert load_checkpoint(folder).step == 6
    _assert_same_run(_resume_to(folder, 17), _reference(tmp_path, 17))


_KILLED = """
import sys
from components.training.loop import train
from tests.test_training import config, make_problem, noisy_mse, val_mse
model, data, val = make_problem()
cfg = config(max_steps=10**7, checkpoint_dir=sys.argv[1], checkpoint_every=3)
train(model, noisy_mse, data, cfg, val_fn=val_mse(val))
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(folder)], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "latest.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.005)
        time.sleep(0.05)  # let it run on into later checkpoints, then kill it wherever it is
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    done = load_checkpoint(folder).step
    target = done + 12
    _assert_same_run(_resume_to(folder, target), _reference(tmp_path, target))


def test_tied_weights_round_trip(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 5, bias=False)
            self.out.weight = self.emb.weight

    a, b = Tied(), Tied()
    save_checkpoint(tmp_path, 1, a.state_dict(), {"note": "x"}, best_state=a.state_dict())
    ck = load_checkpoint(tmp_path)
    b.load_state_dict(ck.model_state)
    assert torch.equal(a.emb.weight, b.emb.weight) and b.out.weight is b.emb.weight
    assert ck.state == {"note": "x"} and _equal_states(ck.best_state, ck.model_state)


def test_devices_and_amp_on_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    batch = {"x": [torch.ones(2), (torch.zeros(1), "tag")], "n": 3}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["x"][1][1] == "tag" and isinstance(moved["x"][1], tuple) and moved["n"] == 3

    model, data, _ = make_problem()

    def fp32_loss(model, batch):
        out = model(batch[0])
        assert out.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        return F.mse_loss(out, batch[1])

    res = train(model, fp32_loss, data, config(max_steps=3, amp=True, device="cpu"))
    assert res.steps == 3 and all(p.dtype == torch.float32 for p in model.parameters())


class _Sized(list):
    """A train set whose items have lengths (for bucket_by_length)."""

    def __init__(self, items, lengths):
        super().__init__(items)
        self.lengths = lengths


def test_length_buckets_cover_the_epoch_once_and_pad_less():
    from components.training.loop import BUCKET_WINDOW, epoch_batches

    n, bs = 1000, 10
    lengths = [float(x) for x in torch.rand(n, generator=torch.Generator().manual_seed(0)).mul(10).tolist()]
    plain = epoch_batches(n, bs, seed=0, epoch=3)
    bucketed = epoch_batches(n, bs, seed=0, epoch=3, lengths=lengths)
    assert sorted(i for b in bucketed for i in b) == list(range(n))
    assert bucketed == epoch_batches(n, bs, seed=0, epoch=3, lengths=lengths)  # deterministic
    assert bucketed != epoch_batches(n, bs, seed=0, epoch=4, lengths=lengths)  # reshuffled each epoch

    def padding(batches):  # padded frames over real frames
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches) / sum(lengths)

    assert padding(bucketed) < 0.1 * padding(plain)
    # Windows of BUCKET_WINDOW batches keep the epoch random: the first batches are not the shortest.
    first = [lengths[i] for b in bucketed[:BUCKET_WINDOW] for i in b]
    assert max(first) > 5


def test_warmup_then_cosine_reaches_zero_at_the_planned_last_step():
    from components.training.loop import lr_factor

    cfg = config(warmup_steps=4, schedule="cosine")
    factors = [lr_factor(s, cfg, total_steps=20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert factors[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 15 / 16)))
    assert lr_factor(20, cfg, 20) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(5, config(schedule="linear"), 20)

    model, data, _ = make_problem()
    steps = []
    train(model, noisy_mse, data, config(max_epochs=2, warmup_steps=2, schedule="cosine"), on_metrics=steps.append)
    lrs = [r["lr"] for r in steps if "loss" in r]
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2) and lrs[-1] < 1e-3


def test_resume_with_buckets_and_schedule_is_bit_identical(tmp_path):
    lengths = [float((7 * i) % 13) for i in range(40)]
    extra = dict(bucket_by_length=True, warmup_steps=3, schedule="cosine", max_epochs=4)

    def run(folder, steps, init_seed, every):
        model, data, val = make_problem(init_seed=init_seed)
        cfg = config(max_steps=steps, checkpoint_dir=str(folder), checkpoint_every=every, **extra)
        res = train(model, noisy_mse, _Sized(data, lengths), cfg, val_fn=val_mse(val))
        return model, res, load_checkpoint(folder)

    run(tmp_path / "run", 8, 0, 3)
    _assert_same_run(run(tmp_path / "run", 17, 99, 3), run(tmp_path / "ref", 17, 0, 10**6))
    model, data, _ = make_problem()
    with pytest.raises(ValueError, match="lengths"):
        train(model, noisy_mse, data, config(max_steps=1, bucket_by_length=True))


def test_lr_scale_gives_each_prefix_its_learning_rate():
    """lr_scale: one AdamW group per multiplier; a scale of 0 freezes, an unknown prefix is an error."""
    model, data, _ = make_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, noisy_mse, data, config(max_steps=4, lr=0.01, lr_scale={"0.": 0.0, "3.weight": 0.5}))
    after = model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"]) and torch.equal(before["0.bias"], after["0.bias"])
    assert not torch.equal(before["3.weight"], after["3.weight"]) and not torch.equal(before["3.bias"], after["3.bias"])
    with pytest.raises(ValueError, match=r"lr_scale prefixes match no parameter name: \['encoder.'\]"):
        train(model, noisy_mse, data, config(max_steps=1, lr_scale={"encoder.": 0.1}))


def test_lr_scale_globs_and_the_most_specific_key():
    from components.training.loop import lr_groups

    named = [(n, nn.Parameter(torch.zeros(1))) for n in ("asr.delta.w", "nlu.base.layer.3.delta.w", "nlu.base.layer.3.adapter.w", "bridge.w")]
    groups = lr_groups(named, 1.0, {"*.delta.*": 0.2, "nlu.": 0.5, "nlu.base.layer.3.delta.": 0.1})
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert [lr_of[id(p)] for _, p in named] == [0.2, 0.1, 0.5, 1.0]  # the longest matching key wins
    assert len(lr_groups(named, 1.0, {"*.lora.*": 2.0})) == 1  # a glob may match nothing
    with pytest.raises(ValueError, match=r"\['nlu.head.'\]"):  # a prefix must name something
        lr_groups(named, 1.0, {"nlu.head.": 2.0})


def test_checkpoint_folders_differ_by_loss_weights_and_input(monkeypatch, tmp_path):
    """A step's checkpoint folder hashes its input cascade and every setting that changes what trains:
    another loss weighting must not resume a checkpoint made with the default one."""
    from types import SimpleNamespace

    import steps.training as st

    inputs = {"cascade": [SimpleNamespace(content_hash="a" * 20, id=1)]}
    monkeypatch.setattr(st, "get_step_context", lambda: SimpleNamespace(inputs=inputs))
    settings = {"max_epochs": 1, "lr": 1e-3}
    plain = st.make_train_config(settings, str(tmp_path), "full").checkpoint_dir
    assert st.make_train_config(settings, str(tmp_path), "full", loss_weights=None).checkpoint_dir == plain
    weighted = st.make_train_config(settings, str(tmp_path), "full", loss_weights={"asr": 1.0}).checkpoint_dir
    assert weighted != plain and Path(weighted).parent == Path(plain).parent == tmp_path / "full"
    assert st.make_train_config({**settings, "progress": False}, str(tmp_path), "full").checkpoint_dir == plain  # RESUMABLE settings don't count
    inputs["cascade"] = [SimpleNamespace(content_hash="b" * 20, id=2)]
    assert st.make_train_config(settings, str(tmp_path), "full").checkpoint_dir != plain
