"""The BentoML speech service (components/serving) under load: latency, throughput with and without
adaptive batching, resident memory against the number of tasks, and what HTTP costs over calling the
runtime in-process.

    .venv/bin/python benchmarks/serving.py [--threads 2] [--requests 100] [--concurrent-requests 160]
        [--clients 16] [--engine lean|transformers] [--from-dir DIR] [--quick] [--out benchmarks/results/serving.json]

Inputs: the production adapters (the ``winning_adapters`` of model ``cascadapt_multitask`` at stage
production in the ZenML store, and the backbone cascade they name), or ``--from-dir DIR`` holding
cascade/ and adapters/ (runtime.write_service_model's layout). The request: the test utterance of
data/target/manifest.jsonl closest to 3 s whose task (speaker_noise) the bundle has, sent as its
FLAC file. Each configuration gets a fresh ``bentoml serve`` subprocess on a free 127.0.0.1 port, in a
temporary BENTOML_HOME holding the service models, stopped once measured. Server and in-process
runs use the same torch intra-op threads (``--arg threads=N`` and OMP_NUM_THREADS=N there,
torch.set_num_threads(N) on the in-process side's torch thread) and the same Whisper engine (--engine:
the service's ``inference_engine`` on, LeanWhisper, the default; or off, transformers'; the JSON keeps
what each server's /v1/tasks reports). The clients run on the same machine as the server.

1. Latency: p50/p99 of sequential requests (one client, after warm-up), batching on.
2. Throughput (requests/s): one client (the latency run) and --clients concurrent clients, batching on
   and off (``--arg batching=false``); the batch sizes the responses report (timings.batch_size). Then
   mixed-task batches: the same clients, batching on, client i asking for the i-th of --clients of the
   bundle's tasks, so that every batch holds rows of different tasks (one forward, each row its own adapter);
   the words each answer has, since each task's adapter may hear the same utterance differently.
3. Memory: VmRSS summed over the server's process tree (and over its worker processes alone) after
   warm-up and a few requests, for a service model of 1 task and one of 64 tasks (copies of one
   production task's adapter, renamed task_000 ...).
4. Service overhead: the client's median sequential latency (1.) against the median of the same work
   in-process (decode_audio + TaskRuntime.predict on the service model's folder, in a fresh process),
   the two interleaved in 5 blocks, as many requests each. Both run torch on their process's one
   torch thread; server_side_overhead and http_client_ms say which side the overhead is on.

Targets: memory with 64 tasks <= 1.1x one task; adaptive batching >= 2x sequential throughput;
service overhead <= 20 % of the in-process time; mixed-task batches >= 0.9x single-task ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.serving.local import free_port, serve_locally  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SERVICE = "components.serving.service:CascadeSLU"
TARGET = {"memory_64_over_1_max": 1.1, "batched_over_sequential_min": 2.0, "overhead_max": 0.20, "mixed_over_single_min": 0.9}
WARMUP = 5
ROUNDS = 5  # the service-overhead comparison's interleaved blocks


def load_inputs(from_dir: str | None):
    """(cascade, bundle, where they came from)."""
    if from_dir:
        from components.cascade_files import load_cascade
        from components.multitask import TaskAdapters

        return load_cascade(Path(from_dir) / "cascade"), TaskAdapters(Path(from_dir) / "adapters"), {"from_dir": str(from_dir)}
    from zenml.client import Client
    from zenml.enums import ModelStages

    mv = Client().get_model_version("cascadapt_multitask", ModelStages.PRODUCTION)
    bundle = mv.get_artifact("winning_adapters").load()
    cascade = Client().get_artifact_version(bundle.backbone).load()
    return cascade, bundle, {"model": mv.model.name, "version": mv.name, "number": mv.number, "stage": "production", "artifact": "winning_adapters"}


def pick_utterance(tasks: list[str], target_s: float = 3.0) -> tuple[dict, str]:
    """The manifest row closest to ``target_s`` (test split first) whose speaker_noise task the bundle has; its task."""
    import pandas as pd

    from components.multitask.tasks import task_names

    df = pd.read_json(REPO / "data/target/manifest.jsonl", lines=True)
    df["bundle_task"] = task_names(df, ["speaker", "noise"])
    known = df[df["bundle_task"].isin(tasks)]
    df = known if len(known) else df.assign(bundle_task=tasks[0])
    df = df.assign(off=(df["duration"] - target_s).abs(), not_test=df["split"] != "test").sort_values(["not_test", "off", "utt_id"])
    row = df.iloc[0]
    return {k: getattr(row[k], "item", lambda: row[k])() for k in ("utt_id", "noisy_path", "duration", "split", "speaker", "noise")}, row["bundle_task"]


def copies_of_task(bundle, task: str, n: int, root: Path):
    """A bundle of ``n`` tasks task_000 ... each holding ``task``'s adapter (the file's task name rewritten:
    attach() takes a task's name from its file, not from bundle.json)."""
    from safetensors.torch import load_file, save_file

    from components.adapters.state import read_metadata
    from components.multitask import TaskAdapters

    (root / "tasks").mkdir(parents=True)
    shutil.copy(bundle.shared_file, root / "shared.safetensors")
    tensors, meta = load_file(str(bundle.task_file(task))), read_metadata(bundle.task_file(task))
    names = [f"task_{i:03d}" for i in range(n)]
    for name in names:
        save_file(tensors, str(root / "tasks" / f"{name}.safetensors"), metadata=meta | {"task": name})
    return TaskAdapters.create(root, bundle.system, "adapter", names, bundle.backbone)


@contextmanager
def server(tag: str, home: Path, threads: int, device: str, inference_engine: bool, log: Path, timeout_s: float, **args):
    """A ``bentoml serve`` subprocess of the service model ``tag``, ready (/readyz 200): (url, process, seconds to
    ready); it must report the engine asked for (a backbone without an inference engine serves on its own)."""
    env = {"BENTOML_HOME": str(home), "OMP_NUM_THREADS": str(threads), "BENTOML_DO_NOT_TRACK": "true", "ZENML_ANALYTICS_OPT_IN": "false"}
    start = time.perf_counter()
    settings = {"model": tag, "threads": threads, "device": device, "inference_engine": inference_engine} | args
    with serve_locally(SERVICE, free_port(), args=settings, env=env, ready_timeout=timeout_s, log=log) as client:
        ready = time.perf_counter() - start
        status, body = client.get("/v1/tasks")
        if status != 200 or body.get("inference_engine") != inference_engine:
            raise SystemExit(f"{tag}: /v1/tasks answered {status} {body!r}; expected inference_engine {inference_engine}")
        yield client.url, client.process, ready


def post(session, url: str, audio: bytes, task: str) -> dict:
    start = time.perf_counter()
    r = session.post(f"{url}/v1/transcribe", files={"audio": ("utterance.flac", audio, "audio/flac")}, data={"task": task}, timeout=300)
    seconds = time.perf_counter() - start
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return {"status": r.status_code, "seconds": seconds, "timings": body.get("timings"), "words": len((body.get("transcript") or "").split()),
            "error": body.get("error") or (None if r.ok else r.text[:200])}


def session():
    import requests

    s = requests.Session()
    s.trust_env = False  # no proxy for 127.0.0.1
    return s


def run_clients(url: str, audio: bytes, task: str | list[str], n: int, clients: int) -> tuple[list[dict], float]:
    """``n`` requests from ``clients`` threads, each sending its next request when its last one is answered
    (client i asks for task ``task[i % len(task)]`` when given a list); (results, wall seconds)."""
    counter, results = itertools.count(), []
    tasks = [task] if isinstance(task, str) else task

    def client(i: int) -> None:
        with session() as s:
            while next(counter) < n:
                results.append(post(s, url, audio, tasks[i % len(tasks)]))

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results, time.perf_counter() - start


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if r["status"] == 200]
    ms = sorted(1000 * r["seconds"] for r in ok)
    out = {"requests": len(results), "ok": len(ok), "errors": dict(Counter(r["status"] for r in results if r["status"] != 200)),
           "wall_s": wall, "requests_per_s": len(ok) / wall}
    if ms:
        out |= {"p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms),
                "server_total_p50_ms": statistics.median(r["timings"]["total_ms"] for r in ok),
                "server_inference_p50_ms": statistics.median(r["timings"]["inference_ms"] for r in ok),
                "batch_sizes": {int(k): v for k, v in sorted(Counter(r["timings"]["batch_size"] for r in ok).items())},
                "mean_batch_size": statistics.fmean(r["timings"]["batch_size"] for r in ok),
                "mean_words": statistics.fmean(r["words"] for r in ok), "max_words": max(r["words"] for r in ok)}
    first_error = next((r["error"] for r in results if r["status"] != 200), None)
    return out | ({"first_error": first_error} if first_error else {})


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def sequential(url: str, audio: bytes, task: str, n: int) -> dict:
    run_clients(url, audio, task, WARMUP, 1)
    return summarize(*run_clients(url, audio, task, n, 1))


def concurrent(url: str, audio: bytes, task: str | list[str], n: int, clients: int) -> dict:
    run_clients(url, audio, task, clients, clients)  # warm-up: one request a client
    return summarize(*run_clients(url, audio, task, n, clients))


def rss_mib(root_pid: int) -> dict:
    """VmRSS of the server's process tree, and of its worker processes (the ones holding the model)."""
    import psutil

    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    rss = {}
    for p in procs:
        try:
            kib = next(int(line.split()[1]) for line in open(f"/proc/{p.pid}/status") if line.startswith("VmRSS:"))
            rss[p.pid] = (kib / 1024, "_bentoml_impl.worker" in " ".join(p.cmdline()))
        except (OSError, psutil.Error, StopIteration):
            pass
    return {"tree_mib": sum(m for m, _ in rss.values()), "workers_mib": sum(m for m, w in rss.values() if w),
            "processes": len(rss), "workers": sum(w for _, w in rss.values())}


RUNTIME = None  # the in-process runtime, in its own process (load_in_process_runtime)


def load_in_process_runtime(model_dir: str, threads: int, device: str, inference_engine: bool) -> None:
    """The in-process side's set-up, in a fresh process as the server's is: in a process where more than
    one thread has run torch, every thread's kernels are slower (components/serving/torch_thread.py)."""
    global RUNTIME
    import torch

    from components.serving import TaskRuntime
    from components.serving.torch_thread import run_on_torch_thread

    run_on_torch_thread(torch.set_num_threads, threads)
    RUNTIME = TaskRuntime.load(model_dir, device=device, inference_engine=inference_engine)


def in_process_ms(audio: bytes, task: str, n: int) -> list[float]:
    """The service's work for one request without HTTP (decode_audio + TaskRuntime.predict), ``n`` times in a row: ms each."""
    from components.serving import decode_audio

    ms = []
    for _ in range(n):
        start = time.perf_counter()
        RUNTIME.predict([decode_audio(audio)], [task])
        ms.append(1000 * (time.perf_counter() - start))
    return ms


def sequential_against_in_process(url: str, in_process, audio: bytes, task: str, n: int) -> tuple[dict, dict]:
    """One client against the server and the in-process loop, interleaved in ROUNDS blocks so that a
    shared machine's slow minutes hit both alike (only one of them works at a time)."""
    run_clients(url, audio, task, WARMUP, 1)
    in_process.apply(in_process_ms, (audio, task, WARMUP))
    served, wall, local = [], 0.0, []
    for i in range(ROUNDS):
        block = n // ROUNDS + (i < n % ROUNDS)
        results, seconds = run_clients(url, audio, task, block, 1)
        served, wall = served + results, wall + seconds
        local += in_process.apply(in_process_ms, (audio, task, block))
    local.sort()
    return summarize(served, wall), {"requests": n, "p50_ms": statistics.median(local), "p99_ms": percentile(local, 99), "mean_ms": statistics.fmean(local)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-dir", help="a folder with cascade/ and adapters/ instead of the ZenML production model")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, server and in-process alike")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", choices=["lean", "transformers"], default="lean", help="Whisper's engine, server and in-process alike")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests (after warm-up)")
    parser.add_argument("--concurrent-requests", type=int, default=160)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--memory-requests", type=int, default=10, help="requests before reading a server's memory")
    parser.add_argument("--memory-tasks", type=int, nargs=2, default=[1, 64])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("--quick", action="store_true", help="a short trial: 20 sequential, 48 concurrent, 3 memory requests")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/serving.json"))
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrent_requests, args.memory_requests = 20, 3 * args.clients, 3

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM still stops the servers and removes the temp folder
    work = Path(tempfile.mkdtemp(prefix="cascadapt-serving-bench-"))
    home = work / "bentoml"
    os.environ.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true", ZENML_ANALYTICS_OPT_IN=os.environ.get("ZENML_ANALYTICS_OPT_IN", "false"))
    import bentoml  # after BENTOML_HOME

    from benchmarks.machine import describe, git_commit
    from components.serving.package import save_service_model

    commit = git_commit()

    load_start = os.getloadavg()  # a shared machine: what else ran shows here
    try:
        cascade, bundle, source = load_inputs(args.from_dir)
        utterance, task = pick_utterance(bundle.tasks)
        audio = (REPO / "data/target" / utterance["noisy_path"]).read_bytes()
        source |= {"system": bundle.system, "tasks": len(bundle.tasks), "backbone": bundle.backbone, "digest": bundle.digest()}
        print(f"{source}\nutterance {utterance['utt_id']} ({utterance['duration']:.2f} s), task {task}", flush=True)
        mixed_tasks = [task] + [t for t in bundle.tasks if t != task][: args.clients - 1]  # one task a client
        tags = {"full": save_service_model(cascade, bundle)}
        for n in args.memory_tasks:
            tags[n] = save_service_model(cascade, copies_of_task(bundle, task, n, work / f"bundle_{n}"))
        del cascade
        lean = args.engine == "lean"
        serve = dict(home=home, threads=args.threads, device=args.device, inference_engine=lean, timeout_s=args.ready_timeout, max_batch_size=args.max_batch_size)
        startup, results = {}, {}

        in_process = multiprocessing.get_context("spawn").Pool(1, load_in_process_runtime, (bentoml.models.get(tags["full"]).path, args.threads, args.device, lean))
        with in_process, server(tags["full"], log=work / "batched.log", **serve) as (url, _, startup["batched"]):
            results["sequential"], local = sequential_against_in_process(url, in_process, audio, task, args.requests)
            print(f"sequential, batching on: {results['sequential']}\nin-process: {local}", flush=True)
            results["batched"] = concurrent(url, audio, task, args.concurrent_requests, args.clients)
            print(f"{args.clients} clients, batching on: {results['batched']}", flush=True)
            results["batched_mixed"] = concurrent(url, audio, mixed_tasks, args.concurrent_requests, args.clients)
            print(f"{args.clients} clients over {len(mixed_tasks)} tasks, batching on: {results['batched_mixed']}", flush=True)
        with server(tags["full"], log=work / "unbatched.log", batching=False, **serve) as (url, _, startup["unbatched"]):
            results["sequential_unbatched"] = sequential(url, audio, task, args.requests)
            print(f"sequential, batching off: {results['sequential_unbatched']}", flush=True)
            results["unbatched"] = concurrent(url, audio, task, args.concurrent_requests, args.clients)
            print(f"{args.clients} clients, batching off: {results['unbatched']}", flush=True)

        memory = {}
        for n in args.memory_tasks:
            with server(tags[n], log=work / f"memory_{n}.log", **serve) as (url, proc, startup[f"tasks_{n}"]):
                sequential(url, audio, "task_000", args.memory_requests)
                time.sleep(1)
                memory[n] = rss_mib(proc.pid)
            print(f"{n} task(s): {memory[n]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lo, hi = args.memory_tasks
    seq, bat, unb, mix = results["sequential"], results["batched"], results["unbatched"], results["batched_mixed"]
    figures = {
        "latency_p50_ms": seq["p50_ms"], "latency_p99_ms": seq["p99_ms"],
        "sequential_rps": seq["requests_per_s"], "batched_rps": bat["requests_per_s"], "unbatched_rps": unb["requests_per_s"],
        "batched_over_sequential": bat["requests_per_s"] / seq["requests_per_s"], "batched_over_unbatched": bat["requests_per_s"] / unb["requests_per_s"],
        "mixed_rps": mix["requests_per_s"], "mixed_over_single_task": mix["requests_per_s"] / bat["requests_per_s"],
        # the same utterance, but each task's adapter hears it its own way: a mixed batch may have more to write
        "mixed_words_over_single_task": mix["mean_words"] / bat["mean_words"],
        "memory_tree_over_1": memory[hi]["tree_mib"] / memory[lo]["tree_mib"], "memory_workers_over_1": memory[hi]["workers_mib"] / memory[lo]["workers_mib"],
        "in_process_p50_ms": local["p50_ms"], "overhead": seq["p50_ms"] / local["p50_ms"] - 1,
        # where the overhead is: HTTP and the client (client p50 - the server's own total), and the server's work against in-process
        "http_client_ms": seq["p50_ms"] - seq["server_total_p50_ms"], "server_side_overhead": seq["server_total_p50_ms"] / local["p50_ms"] - 1,
    }
    targets = {
        "memory_many_over_one_task": {"value": figures["memory_tree_over_1"], "max": TARGET["memory_64_over_1_max"]},
        "batched_over_sequential": {"value": figures["batched_over_sequential"], "min": TARGET["batched_over_sequential_min"]},
        "service_overhead": {"value": figures["overhead"], "max": TARGET["overhead_max"]},
        "mixed_over_single_task": {"value": figures["mixed_over_single_task"], "min": TARGET["mixed_over_single_min"]},
    }
    for t in targets.values():
        t["pass"] = t["value"] <= t["max"] if "max" in t else t["value"] >= t["min"]
    result = {
        "machine": describe(), "commit": commit, "source": source, "utterance": utterance | {"task": task, "bytes": len(audio)},
        "mixed_tasks": mixed_tasks,
        "settings": {"threads": args.threads, "device": args.device, "engine": args.engine, "requests": args.requests, "concurrent_requests": args.concurrent_requests,
                     "clients": args.clients, "warmup": WARMUP, "memory_requests": args.memory_requests, "max_batch_size": args.max_batch_size, "quick": args.quick},
        "load_average": {"start": load_start, "end": os.getloadavg()}, "startup_s": startup, "figures": figures, "targets": targets, "results": results, "in_process": local,
        "memory_mib": {f"tasks_{n}": m for n, m in memory.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))

    errors = {k: r["errors"] for k, r in results.items() if r["errors"]}
    rows = [
        ("latency p50 / p99 (1 client)", f"{seq['p50_ms']:.1f} / {seq['p99_ms']:.1f} ms", ""),
        ("throughput 1 client", f"{seq['requests_per_s']:.2f} req/s", ""),
        (f"throughput {args.clients} clients, batching", f"{bat['requests_per_s']:.2f} req/s", f"mean batch {bat.get('mean_batch_size', 0):.1f}"),
        (f"throughput {args.clients} clients, no batching", f"{unb['requests_per_s']:.2f} req/s", f"mean batch {unb.get('mean_batch_size', 0):.1f}"),
        ("batched / sequential", f"{figures['batched_over_sequential']:.2f}x", f">= {TARGET['batched_over_sequential_min']}x  {verdict(targets['batched_over_sequential'])}"),
        ("batched / unbatched", f"{figures['batched_over_unbatched']:.2f}x", ""),
        (f"throughput {args.clients} clients, {len(mixed_tasks)} tasks", f"{mix['requests_per_s']:.2f} req/s", f"mean batch {mix.get('mean_batch_size', 0):.1f}"),
        ("mixed-task / single-task batches", f"{figures['mixed_over_single_task']:.2f}x", f">= {TARGET['mixed_over_single_min']}x  {verdict(targets['mixed_over_single_task'])}"),
        ("  words a request, mixed / single task", f"{mix['mean_words']:.2f} / {bat['mean_words']:.2f}", f"(longest {mix['max_words']} / {bat['max_words']})"),
        (f"RSS tree {lo} / {hi} tasks", f"{memory[lo]['tree_mib']:.0f} / {memory[hi]['tree_mib']:.0f} MiB", ""),
        (f"RSS {hi} / {lo} tasks (tree; workers)", f"{figures['memory_tree_over_1']:.3f}x; {figures['memory_workers_over_1']:.3f}x",
         f"<= {TARGET['memory_64_over_1_max']}x  {verdict(targets['memory_many_over_one_task'])}"),
        ("service / in-process p50", f"{seq['p50_ms']:.1f} / {local['p50_ms']:.1f} ms", f"(server-side total p50 {seq['server_total_p50_ms']:.1f} ms)"),
        ("service overhead", f"{100 * figures['overhead']:+.1f} %", f"<= {TARGET['overhead_max']:.0%}  {verdict(targets['service_overhead'])}"),
        ("  of which server-side / HTTP+client", f"{100 * figures['server_side_overhead']:+.1f} % / {figures['http_client_ms']:.1f} ms", ""),
    ]
    print()
    for name, value, target in rows:
        print(f"{name:38s} {value:>22s}  {target}")
    print(f"batch sizes (requests in a batch of size): batching {bat.get('batch_sizes')}, no batching {unb.get('batch_sizes')}")
    if errors:
        print(f"non-200 answers: {errors}")
    print(f"wrote {args.out}")


def verdict(target: dict) -> str:
    return "pass" if target["pass"] else "FAIL"


if __name__ == "__main__":
    main()
