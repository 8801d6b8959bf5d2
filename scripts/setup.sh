#!/usr/bin/env bash
# Idempotent set-up on a Debian machine (run as root or with sudo rights):
# TTS engines, sox and chromium from apt when missing, uv, the locked venv in .venv, `zenml init`.
# Sourced by run-demo.sh and run-tests.sh; safe to run again at any time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ZENML_ANALYTICS_OPT_IN=false DVC_NO_ANALYTICS=1 UV_PYTHON_DOWNLOADS=never
UV_VERSION=0.13.9

# 1. Debian packages: the TTS engines, their voices, sox, and Python 3.11 if absent.
missing=()
for prog in festival flite espeak-ng sox git chromium; do  # chromium: the dashboard test's headless browser
  command -v "$prog" >/dev/null || missing+=("$prog")
done
[ -d /usr/share/festival/voices/english/kal_diphone ] || missing+=(festvox-kallpc16k)
[ -d /usr/share/festival/voices/english/ked_diphone ] || missing+=(festvox-kdlpc16k)
[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || missing+=(festvox-us-slt-hts)
# real recorded speech for the Whisper tests (BSD; CC-BY-SA): 14 read clips, one telephone voice
[ -d /usr/share/pocketsphinx/test/data/librivox ] || missing+=(pocketsphinx-testdata)
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || missing+=(asterisk-core-sounds-en-wav)
if ! command -v python3.11 >/dev/null; then
  missing+=(python3.11 python3.11-venv)
elif ! command -v uv >/dev/null && ! python3.11 -c "import ensurepip" 2>/dev/null; then
  missing+=(python3.11-venv)  # Debian splits venv/ensurepip out of python3.11; uv is bootstrapped with it
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. uv, pinned, in its own small venv unless the machine already has it.
if command -v uv >/dev/null; then
  UV=uv
else
  [ -x .tools/bin/uv ] || { python3.11 -m venv .tools && .tools/bin/pip install -q "uv==$UV_VERSION"; }
  UV="$ROOT/.tools/bin/uv"
fi

# 3. The locked environment (uv.lock), with bytecode compiled: this machine sets
#    PYTHONDONTWRITEBYTECODE=1 and imports are 2-3x slower without it.
"$UV" sync --frozen --compile-bytecode --python python3.11 --quiet

# 4. ZenML repository (local stack, SQLite store) and DVC, offline.
[ -d .zen ] || .venv/bin/zenml init >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"
