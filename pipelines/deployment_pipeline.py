from typing import Optional

from zenml import Model, pipeline
from zenml.client import Client
from zenml.enums import ModelStages

from steps.serving import build_service_bento, package_service_model, smoke_test_bento

MODEL = "cascadapt_multitask"


def promoted_adapters(model_name: str = MODEL):
    """The production version of ``model_name`` and its winning_adapters artifact (resolved when the pipeline
    is compiled, so the run's lineage links to the exact adapters)."""
    try:
        version = Client().get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        raise LookupError(f"model {model_name!r} has no production version: run the multitask pipeline first (it promotes its winner)") from None
    return version, version.get_artifact("winning_adapters")


@pipeline(model=Model(name=MODEL, version=ModelStages.PRODUCTION))
def deployment_pipeline(serve_locally: bool = True, port: int = 3000, service_args: Optional[dict] = None) -> None:
    """The promoted adapters and their backbone -> a BentoML model -> ``bentoml build`` (tag logged on the
    model version) -> optionally served on 127.0.0.1:``port`` for a smoke test of every task.

    ``service_args``: bento arguments baked into the bento (components/serving/service.py ServingArgs)."""
    version, adapters = promoted_adapters()
    model_tag = package_service_model(adapters, version.model.name, version.number)
    bento_tag = build_service_bento(model_tag, args=service_args)
    if serve_locally:
        smoke_test_bento(bento_tag, adapters, port=port)
