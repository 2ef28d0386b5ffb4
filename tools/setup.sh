#!/usr/bin/env bash
# Install n3f into ./.venv (created if missing), plus the system libraries its wheels need.
#   bash tools/setup.sh          runtime only
#   bash tools/setup.sh --dev    with the test tools (pytest, ruff, playwright, hypothesis)
# Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

# open3d's wheel links libusb-1.0 and libgomp; install them when absent (Debian/Ubuntu).
missing=()
for pkg in libusb-1.0-0 libgomp1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "n3f setup: installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "n3f setup: please install these system libraries: ${missing[*]}" >&2
  fi
fi

# --dev: the web page's end-to-end test drives Debian's chromium through Playwright (no browser
# download at test time). Optional: without it that one test skips.
if [ -n "$extras" ] && ! dpkg -s chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "n3f setup: installing chromium (for the browser test)"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
    || echo "n3f setup: could not install chromium; the browser test will skip" >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "n3f setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
echo "n3f setup: installing n3f${extras} into .venv (first run takes a few minutes: PyTorch is large)"
log=.venv/n3f-pip-install.log
if ! .venv/bin/python -m pip install --disable-pip-version-check --no-cache-dir -e ".${extras}" >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" | tail -40 >&2
  echo "n3f setup: pip install failed (full log: $log)" >&2
  exit 1
fi
.venv/bin/python -c "import n3f, torch, open3d, pycolmap, cv2; print('n3f setup: ok (n3f', n3f.__version__ + ', torch', torch.__version__ + ')')"
# Build the fused CPU kernels now (about 40 s, once per machine and checkout) rather than in the
# first fit; without a compiler n3f falls back to pure PyTorch and says so.
echo "n3f setup: building the fused CPU kernels"
.venv/bin/python -c "
from n3f.render.cpu_kernels import failure, hashgrid_module
print('n3f setup: fused CPU kernels ready' if hashgrid_module() is not None else 'n3f setup: fused CPU kernels not built (' + str(failure()) + '); fits will use pure PyTorch')
"
