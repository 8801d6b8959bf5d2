"""Serving a bento (or the service module) on 127.0.0.1 for a while, and a small client for it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from components.data.speakers import Speaker
from components.data.tts import synthesize

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceClient:
    """POST /v1/transcribe and GET /v1/tasks with the standard library (multipart built by hand)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self.process: subprocess.Popen | None = None  # the server, when serve_locally started it

    def get(self, path: str) -> tuple[int, dict | str]:
        return self.send(urllib.request.Request(self.url + path))

    def tasks(self) -> dict:
        status, body = self.get("/v1/tasks")
        if status != 200:
            raise RuntimeError(f"GET /v1/tasks: {status} {body}")
        return body

    def post_audio(self, audio: bytes | None, task: str | None, filename: str = "audio.wav") -> tuple[int, dict | str]:
        """(status, JSON body) of POST /v1/transcribe; None leaves a field out."""
        boundary = uuid.uuid4().hex
        parts = []
        if audio is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode() + audio + b"\r\n")
        if task is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\n{task}\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.url + "/v1/transcribe", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return self.send(request)

    def transcribe(self, audio: bytes, task: str) -> dict:
        status, body = self.post_audio(audio, task)
        if status != 200:
            raise RuntimeError(f"POST /v1/transcribe (task {task}): {status} {body}")
        return body

    def send(self, request: urllib.request.Request) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")


@contextmanager
def serve_locally(target: str, port: int, args: dict | None = None, env: dict | None = None, ready_timeout: float = 180.0, log: Path | None = None) -> Iterator[ServiceClient]:
    """``bentoml serve target`` (a bento tag or components.serving.service:CascadeSLU) on 127.0.0.1:port
    until the block ends; yields a client (``client.process``: the server) once /readyz answers 200."""
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    for key, value in (args or {}).items():
        cmd += ["--arg", f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=REPO, env=os.environ | (env or {}), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = ServiceClient(f"http://127.0.0.1:{port}")
    client.process = proc
    tail = lambda: f"; log: {log}:\n{log.read_text()[-3000:]}" if log else ""  # noqa: E731
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve {target} exited with {proc.returncode} before it was ready{tail()}")
            try:
                if client.get("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bentoml serve {target} not ready on port {port} after {ready_timeout:.0f} s{tail()}")
            time.sleep(0.5)
        yield client
    finally:
        _stop(proc)
        if log:
            out.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (start_new_session: ours alone), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def wav_bytes(wave, rate: int = 16000) -> bytes:
    """A float waveform (L,) as the 16-bit WAV bytes a client would send."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def synthesize_request(text: str, path: Path, voice: str = "en-us") -> bytes:
    """A spoken request (espeak-ng), as the 16 kHz FLAC bytes a client would send."""
    synthesize(Speaker("espeak-ng", voice), [text], [path])
    return path.read_bytes()
