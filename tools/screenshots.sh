#!/usr/bin/env bash
# Render every notebook to HTML (nbconvert, saved outputs, no execution) and take a screenshot of the top of each
# page with headless Chromium (Debian's `chromium` package), as a reader of the docs would see it.
#   bash tools/screenshots.sh [OUT_DIR]      (default _screens/; needs `apt-get install chromium`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-_screens}
py=${PYTHON:-.venv/bin/python}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "error: no chromium: apt-get install -y chromium" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
for nb in nbs/*.ipynb; do
  name=$(basename "$nb" .ipynb)
  "$py" -m jupyter nbconvert --to html --log-level WARN --output-dir "$out" "$nb"
  # a tall window: most of a lesson's opening, its first plots and outputs
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,6000 \
    --screenshot="$out/$name.png" "file://$out/$name.html" 2>/dev/null || echo "warning: no screenshot of $name" >&2
  echo "$out/$name.png"
done
