// Usage: node tests/js/validate_gltf.mjs FILE.glb
// Prints the Khronos glTF validator's report for FILE as JSON on stdout.
// Exit status: 0 when the report was produced (check report.issues.numErrors),
// 2 on bad usage or when the validator could not run at all.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as validator from 'gltf-validator';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate_gltf.mjs FILE.glb');
  process.exit(2);
}

try {
  const data = await readFile(file);
  const report = await validator.validateBytes(new Uint8Array(data), {
    uri: path.basename(file),
    maxIssues: 0, // report every issue
    writeTimestamp: false,
    // Bundles are self-contained; resolve external URIs next to the file anyway.
    externalResourceFunction: (uri) =>
      readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then(
        (buf) => new Uint8Array(buf),
      ),
  });
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
} catch (err) {
  console.error(`gltf-validator failed on ${file}: ${err}`);
  process.exit(2);
}
