#!/usr/bin/env bash
# Rebuild the vendored three.js bundle of the web page from the npm registry (pinned by
# package-lock.json): three.js + GLTFLoader + OrbitControls in one minified ES module,
# plus three.js's licence. node_modules/ stays here and is git-ignored; only the output
# under ../static/vendor/ is committed.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
out=../static/vendor
mkdir -p "$out"
version=$(node -p 'JSON.parse(require("fs").readFileSync("node_modules/three/package.json")).version')
./node_modules/.bin/esbuild three-entry.js --bundle --minify --format=esm --target=es2020 \
  --legal-comments=none \
  --banner:js="/* three.js ${version} (MIT, see three.LICENSE) with GLTFLoader and OrbitControls; built by service/web/vendor-src/build.sh */" \
  --outfile="$out/three.bundle.min.js"
cp node_modules/three/LICENSE "$out/three.LICENSE"
ls -l "$out"
