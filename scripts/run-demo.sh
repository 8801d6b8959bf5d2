#!/usr/bin/env bash
# The main job on the embedded default: the data pipeline on the demo config.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
zenml pipeline run pipelines.data_pipeline.data_pipeline -c configs/demo.yaml
