"""A real local ZenML server (`zenml login --local`) on a free 127.0.0.1 port, for REST and dashboard tests.

    with local_zenml_server(config_dir) as url:     # the store of that ZenML config, served
        get_json(f"{url}/api/v1/runs?size=1")

The server has no authentication (ZenML's local mode), so plain HTTP requests work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from components.serving.local import free_port

BIN = os.path.dirname(sys.executable)


@contextmanager
def local_zenml_server(config_dir: Path):
    env = {**os.environ, "ZENML_CONFIG_PATH": str(config_dir), "ZENML_AUTO_OPEN_DASHBOARD": "false", "ZENML_ANALYTICS_OPT_IN": "false"}
    port = free_port()
    subprocess.run([f"{BIN}/zenml", "login", "--local", "--port", str(port)], env=env, cwd=config_dir.parent, check=True, capture_output=True, timeout=300)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([f"{BIN}/zenml", "logout", "--local"], env=env, cwd=config_dir.parent, capture_output=True, timeout=120)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def put_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


# Python for a client of the server: a tiny pretrained_cascade linked to cascadapt_backbones, so that the
# adaptation pipelines, which resolve the backbone when they are compiled, compile (a real store holds the
# pre-trained one).
REGISTER_TINY_BACKBONE = textwrap.dedent(
    """
    from zenml import Model, link_artifact_to_model, save_artifact
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer
    import steps.materializers  # noqa: F401  (the Cascade materializer)

    labels = NluLabels.from_label_set()
    tiny = Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=1, heads=4)), build_nlu(labels), labels)
    link_artifact_to_model(save_artifact(tiny, name="pretrained_cascade"), model=Model(name="cascadapt_backbones"))
    """
)
