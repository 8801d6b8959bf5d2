"""Serving: request audio and its named 4xx errors, the adaptive batcher, a runtime whose mixed-task batches
give each request what it gets alone, and the BentoML service as a real server on 127.0.0.1 (round trip,
bad input, task switching, 200 concurrent requests), and an offline bento build."""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from components import adapters as A
from components.multitask import ADAPTER, TaskAdapters
from components.serving import AudioLimits, MicroBatcher, RequestError, TaskRuntime, decode_audio, write_service_model
from components.serving.torch_thread import on_torch_thread, run_on_torch_thread

TASKS = ["alice", "bob", "carol"]
TEXTS = ["turn on the lights in the kitchen", "what is the weather like tomorrow", "play some jazz", "set an alarm for seven am"]
LIMITS = {"max_seconds": 4.0, "max_bytes": 200_000}


@pytest.fixture(scope="module")
def utterances(tmp_path_factory) -> list[bytes]:
    """Real synthesized speech (espeak-ng and flite), as the FLAC bytes a client sends."""
    from components.data.speakers import Speaker
    from components.data.tts import synthesize

    out = tmp_path_factory.mktemp("speech")
    paths = [out / f"{i}.flac" for i in range(len(TEXTS))]
    synthesize(Speaker("espeak-ng", "en-us"), TEXTS[:2], paths[:2])
    synthesize(Speaker("flite", "slt"), TEXTS[2:], paths[2:])
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small cascade with an HRA adapter of three tasks, each task's parameters made distinct."""
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=2, heads=4, dropout=0.0)), build_nlu(labels), labels).eval()
    A.add_adapter(cascade, A.HRAConfig(target_modules=["asr:@layer"], r=8), name=ADAPTER, tasks=TASKS)
    with torch.no_grad():
        for name, p in cascade.named_parameters():
            if ".tasks." in name:
                p.normal_(0, 2.0)
    root = tmp_path_factory.mktemp("service_model")
    bundle = TaskAdapters.export_adapter(cascade, root / "bundle", system="hra_test", backbone="test-backbone")
    A.remove_adapter(cascade, ADAPTER)
    return write_service_model(root / "model", cascade, bundle)


@pytest.fixture(scope="module")
def runtime(model_dir) -> TaskRuntime:
    run_on_torch_thread(torch.set_num_threads, 1)  # torch's thread count is per thread: set it where the runtime runs
    return TaskRuntime.load(model_dir, device="cpu")


def expected(runtime: TaskRuntime, audio: bytes, task: str) -> dict:
    return runtime.predict([decode_audio(audio, AudioLimits(**LIMITS))], [task])[0]


# --------------------------------------------------------------------------- request audio


def wav(seconds: float, rate: int = 16_000, channels: int = 1, subtype: str = "PCM_16", fmt: str = "WAV", value: float | None = None) -> bytes:
    n = int(seconds * rate)
    audio = np.full((n, channels), value, dtype=np.float32) if value is not None else (0.1 * np.random.default_rng(0).standard_normal((n, channels))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("rate,channels,fmt", [(16_000, 1, "WAV"), (8_000, 1, "WAV"), (44_100, 2, "WAV"), (22_050, 1, "FLAC"), (48_000, 2, "OGG")])
def test_audio_of_any_rate_and_channel_count_becomes_16k_mono(rate, channels, fmt):
    wave = decode_audio(wav(1.5, rate, channels, subtype="VORBIS" if fmt == "OGG" else "PCM_16", fmt=fmt))
    assert wave.dtype == torch.float32 and wave.dim() == 1 and abs(len(wave) - 24_000) <= 2


BAD_AUDIO = {  # name -> (bytes, limits, status, words in the message)
    "empty": (b"", {}, 400, "empty"),
    "not audio": (b"# README\nthis is text, not sound\n" * 20, {}, 415, "not an audio file"),
    "truncated": (wav(2.0)[:20_000], {}, 422, "truncated"),
    "corrupt flac": (wav(2.0, fmt="FLAC")[:3_000] + bytes(5_000), {}, 422, "corrupt"),
    "too long": (wav(5.0), {"max_seconds": 4.0}, 422, "the limit is 4 s"),
    "too large": (wav(3.0), {"max_bytes": 50_000}, 413, "the limit is 50000"),
    "too short": (wav(0.01), {}, 422, "at least"),
    "odd sample rate": (wav(0.5, rate=1_000), {}, 422, "sample rate 1000"),
    "not finite": (wav(0.5, subtype="FLOAT", value=float("nan")), {}, 422, "NaN"),
}


@pytest.mark.parametrize("case", BAD_AUDIO)
def test_bad_audio_gets_a_4xx_that_names_the_problem(case):
    data, limits, status, words = BAD_AUDIO[case]
    with pytest.raises(RequestError, match=words) as err:
        decode_audio(data, AudioLimits(**limits), name="audio x.wav")
    assert err.value.status == status and str(err.value).startswith("audio x.wav: ")


# --------------------------------------------------------------------------- adaptive batching


def test_requests_that_arrive_while_the_model_is_busy_form_the_next_batch():
    seen = []

    def slow_double(items):
        seen.append(list(items))
        time.sleep(0.05)
        return [2 * x for x in items]

    async def main():
        batcher = MicroBatcher(slow_double, max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the model is busy with request 0 ...
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 10)))  # ... while 9 more arrive
        batcher.close()
        return [await first, *rest]

    results = asyncio.run(main())
    assert [r for r, _ in results] == [2 * i for i in range(10)]  # each caller gets its own result
    assert [len(b) for b in seen] == [1, 4, 4, 1]  # idle: at once; busy: batches up to max_batch_size
    assert [size for _, size in results] == [1, 4, 4, 4, 4, 4, 4, 4, 4, 1]


def test_clients_a_batch_answered_form_the_next_batch_together():
    """Closed-loop clients who come back a few ms apart are not split into a batch of one and one of the rest."""
    seen = []

    def slow(items):
        seen.append(len(items))
        time.sleep(0.1)
        return items

    async def client(batcher, i):
        for _ in range(4):
            await batcher.submit(i)
            await asyncio.sleep(0.001 * i)  # the answered clients come back 0-7 ms apart

    async def main():
        batcher = MicroBatcher(slow, max_batch_size=8)
        await asyncio.gather(*(client(batcher, i) for i in range(8)))
        batcher.close()

    asyncio.run(main())
    assert seen == [8, 8, 8, 8], seen  # without the refill wait: 8, 1, 7, 1, 7, ...


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    def fn(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=20)
        outcome = await asyncio.gather(batcher.submit("a"), batcher.submit("bad"), return_exceptions=True)
        after = await batcher.submit("b")
        batcher.close()
        return outcome, after

    outcome, after = asyncio.run(main())
    assert all(isinstance(o, ValueError) for o in outcome) and after == ("b", 1)


# --------------------------------------------------------------------------- runtime


def test_a_mixed_task_batch_gives_each_request_what_it_gets_alone(runtime, utterances):
    waves = [decode_audio(u) for u in utterances] * 3
    tasks = [TASKS[i % 3] for i in range(len(waves))]
    batched = runtime.predict(waves, tasks)
    alone = [runtime.predict([w], [t])[0] for w, t in zip(waves, tasks)]
    assert batched == alone
    per_task = [runtime.predict([waves[0]], [t])[0] for t in TASKS]
    assert len({r["transcript"] for r in per_task}) == 3  # the tasks' adapters really differ
    with pytest.raises(RequestError, match="unknown task 'dave'") as err:
        runtime.predict(waves[:1], ["dave"])
    assert err.value.status == 404


def test_a_bounded_runtime_loads_tasks_on_first_use_and_drops_the_least_recent(model_dir, runtime, utterances):
    bounded = TaskRuntime.load(model_dir, device="cpu", max_resident_tasks=2)
    assert bounded.resident_tasks == [] and bounded.tasks == TASKS
    waves = [decode_audio(u) for u in utterances[:3]]
    for task in TASKS + TASKS[:1]:  # alice, bob, carol (alice dropped), alice again (bob dropped)
        assert bounded.predict(waves[:1], [task]) == runtime.predict(waves[:1], [task])
    assert bounded.resident_tasks == ["carol", "alice"]
    assert bounded.predict(waves, TASKS) == runtime.predict(waves, TASKS)  # a batch may need more than the bound
    bounded.predict(waves[:1], ["bob"])
    assert bounded.resident_tasks == ["carol", "bob"]  # after alice, bob, carol: bob used again, alice the least recent
    with pytest.raises(ValueError, match="max_resident_tasks"):
        TaskRuntime.load(model_dir, device="cpu", max_resident_tasks=0)


def test_a_task_added_to_the_folder_is_served_without_a_restart(model_dir, runtime, utterances, tmp_path):
    root = shutil.copytree(model_dir, tmp_path / "model")
    live = TaskRuntime.load(root, device="cpu")
    wave = decode_audio(utterances[0])
    with pytest.raises(RequestError, match="unknown task 'dave'"):
        live.predict([wave], ["dave"])
    adapters = root / "adapters"
    shutil.copy(adapters / "tasks" / "alice.safetensors", adapters / "tasks" / "dave.safetensors")  # dave: alice's adapter, renamed
    meta = json.loads((adapters / "bundle.json").read_text())
    (adapters / "bundle.json").write_text(json.dumps(meta | {"tasks": meta["tasks"] + ["dave"]}))
    got = live.predict([wave], ["dave"])[0]
    assert got | {"task": "alice"} == runtime.predict([wave], ["alice"])[0] and got["task"] == "dave"
    assert "dave" in live.tasks


def test_the_runtime_runs_torch_on_one_thread_whoever_calls(runtime, utterances):
    """A second thread running torch slows every thread's kernels (torch_thread.py says why): predictions
    called from the main thread, a pool's threads or the torch thread itself all run on the torch thread."""
    threads = set()
    hook = runtime.cascade.asr.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    try:
        wave = decode_audio(utterances[0])
        runtime.predict([wave], [TASKS[0]])
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda t: runtime.predict([wave], [t]), TASKS))
        run_on_torch_thread(runtime.predict, [wave], [TASKS[1]])  # inline there, not queued behind itself
    finally:
        hook.remove()
    assert len(threads) == 1 and run_on_torch_thread(lambda: threading.get_ident()) in threads
    assert run_on_torch_thread(on_torch_thread) and not on_torch_thread()
    with pytest.raises(RequestError, match="unknown task"):  # errors come back to the caller
        runtime.predict([wave], ["dave"])


def test_text_mode_reads_the_same_1best_and_a_bad_mode_is_refused(model_dir, runtime):
    text = TaskRuntime.load(model_dir, device="cpu", mode="text")
    waves = [decode_audio(wav(1.0)), decode_audio(wav(1.6))]
    tasks = [runtime.tasks[0], runtime.tasks[-1]]
    by_text, by_e2e = text.predict(waves, tasks), runtime.predict(waves, tasks)
    assert [r["transcript"] for r in by_text] == [r["transcript"] for r in by_e2e]
    assert all(r["intent"] == f"{r['scenario']}_{r['action']}" for r in by_text)
    with pytest.raises(ValueError, match="serving mode must be one of"):
        TaskRuntime.load(model_dir, device="cpu", mode="bridge")


def test_a_full_finetuning_bundle_is_refused_with_the_reason(model_dir, tmp_path):
    from components.cascade_files import load_cascade

    cascade = load_cascade(model_dir / "cascade")
    TaskAdapters.save_full_task(cascade.asr, tmp_path, "alice")
    bundle = TaskAdapters.create(tmp_path, "full", "full", ["alice"], "b", task_parameters=1)
    with pytest.raises(ValueError, match="needs kind 'adapter'"):
        TaskRuntime(cascade, bundle)


# --------------------------------------------------------------------------- the service on 127.0.0.1


@pytest.fixture(scope="module")
def service_model_tag(model_dir):
    import bentoml

    with bentoml.models.create("cascadapt_slu_test") as model:
        shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
    return str(model.tag)


@pytest.fixture(scope="module")
def server(service_model_tag, tmp_path_factory):
    from components.serving.local import free_port, serve_locally

    log = tmp_path_factory.mktemp("server") / "serve.log"
    args = {"model": service_model_tag, "max_batch_size": 8, "threads": 1} | LIMITS
    with serve_locally("components.serving.service:CascadeSLU", free_port(), args=args, log=log) as client:
        yield client


def test_round_trip_gives_the_in_process_result(server, runtime, utterances):
    for audio, task in zip(utterances, TASKS + TASKS[:1]):
        status, body = server.post_audio(audio, task, filename="utt.flac")
        assert status == 200, body
        assert set(body) >= {"task", "speech", "transcript", "scenario", "action", "intent", "entities", "timings", "duration_s"}
        assert {k: body[k] for k in ("task", "speech", "transcript", "scenario", "action", "intent", "entities")} == expected(runtime, audio, task)
        assert body["timings"]["total_ms"] >= body["timings"]["inference_ms"] > 0


def test_task_switching_returns_each_tasks_own_result(server, runtime, utterances):
    replies = {task: server.transcribe(utterances[0], task) for task in TASKS * 2}
    for task, body in replies.items():
        assert body["task"] == task and body["transcript"] == expected(runtime, utterances[0], task)["transcript"]
    assert len({body["transcript"] for body in replies.values()}) == 3


def test_tasks_and_probes(server):
    listed = server.tasks()
    assert listed["tasks"] == TASKS and listed["system"] == "hra_test" and listed["backbone"] == "test-backbone" and len(listed["digest"]) == 64
    assert server.get("/readyz")[0] == 200 and server.get("/livez")[0] == 200


def raw_post(server, body: bytes, content_type: str | None) -> tuple[int, dict | str]:
    import urllib.request

    headers = {"Content-Type": content_type} if content_type else {}
    return server.send(urllib.request.Request(server.url + "/v1/transcribe", data=body, method="POST", headers=headers))


BAD_REQUESTS = {  # name -> (send(server, good audio), status, words in the error)
    "empty body": (lambda s, a: raw_post(s, b"", None), 415, "multipart/form-data"),
    "json body": (lambda s, a: raw_post(s, b'{"task": "alice"}', "application/json"), 415, "multipart/form-data"),
    "broken multipart": (lambda s, a: raw_post(s, b"garbage", "multipart/form-data; boundary=xyz"), 400, "malformed multipart"),
    "no audio field": (lambda s, a: s.post_audio(None, "alice"), 400, "'audio'"),
    "audio sent as text (a URL)": (lambda s, a: raw_post(s, b'--b\r\nContent-Disposition: form-data; name="audio"\r\n\r\nhttp://127.0.0.1:9/x.wav\r\n--b\r\nContent-Disposition: form-data; name="task"\r\n\r\nalice\r\n--b--\r\n', "multipart/form-data; boundary=b"), 400, "not text"),
    "no task": (lambda s, a: s.post_audio(a, None), 400, "'task'"),
    "unknown task": (lambda s, a: s.post_audio(a, "dave"), 404, "unknown task 'dave'"),
    "empty file": (lambda s, a: s.post_audio(b"", "alice"), 400, "empty"),
    "not audio": (lambda s, a: s.post_audio(b"hello, I am text" * 50, "alice", filename="notes.txt"), 415, "notes.txt: not an audio file"),
    "corrupt audio": (lambda s, a: s.post_audio(a[:3_000] + bytes(4_000), "alice"), 422, "corrupt"),
    "too long": (lambda s, a: s.post_audio(wav(5.0), "alice"), 422, "the limit is 4 s"),
    "too large": (lambda s, a: s.post_audio(wav(3.9, rate=48_000), "alice"), 413, "the limit is 200000"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_json_4xx_and_the_service_stays_up(server, utterances, case):
    send, status, words = BAD_REQUESTS[case]
    got, body = send(server, utterances[0])
    assert got == status, body
    assert isinstance(body, dict) and words in body["error"], body
    assert server.get("/readyz")[0] == 200 and server.transcribe(utterances[1], "bob")["task"] == "bob"


def test_200_concurrent_requests_from_16_clients(server, runtime, utterances):
    rng = random.Random(0)
    jobs = [(rng.randrange(len(utterances)), rng.choice(TASKS)) for _ in range(200)]
    want = {(u, t): expected(runtime, utterances[u], t) for u, t in set(jobs)}
    lock, sizes = threading.Lock(), []

    def call(job):
        u, t = job
        status, body = server.post_audio(utterances[u], t)
        with lock:
            sizes.append(body["timings"]["batch_size"] if status == 200 else 0)
        return status, body, job

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(call, jobs))
    assert [status for status, _, _ in replies] == [200] * 200, [b for s, b, _ in replies if s != 200][:3]
    for _, body, job in replies:
        assert {k: body[k] for k in want[job]} == want[job]  # batched with others, the same answer as alone
    assert max(sizes) > 1  # concurrent requests were batched


# --------------------------------------------------------------------------- bento


def test_bentoml_build_offline_bakes_in_the_model_and_arguments(service_model_tag):
    import bentoml

    from components.serving.package import build_bento

    tag = build_bento(service_model_tag, args={"max_seconds": 10})
    bento = bentoml.get(tag)
    info = yaml.safe_load(open(f"{bento.path}/bento.yaml").read())
    assert info["args"] == {"model": service_model_tag, "max_seconds": 10}
    assert [m["tag"] for m in info["services"][0]["models"]] == [service_model_tag]  # the service loads that model
    assert "torch==2.11.0" in open(f"{bento.path}/env/python/requirements.txt").read()
    assert open(f"{bento.path}/src/components/serving/service.py").read().startswith('"""The BentoML service')
