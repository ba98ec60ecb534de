// Score an edgefleet TF.js artifact with @tensorflow/tfjs (pure JS, cpu backend), for the
// compiler's parity gate (compiler/targets/tfjs.py).
//
//   node tfjs_score.mjs NODE_ROOT MODEL.tfjs.json IN.f64 N F OUT.f32
//
// IN.f64 holds the encoded float64 features [N, F] (little-endian); they are split into the
// float32x3 input here, with the same JS a device runtime uses (docs/bundle-format.md). OUT.f32
// receives the float32 probabilities [N, n_classes]. NODE_ROOT is the folder whose node_modules
// has @tensorflow/tfjs.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [root, modelPath, inPath, n, f, outPath] = process.argv.slice(2);
const require = createRequire(join(root, 'package.json'));
const tf = require('@tensorflow/tfjs');

const art = JSON.parse(readFileSync(modelPath, 'utf8'));
const weights = Buffer.from(art.weightData, 'base64');
art.weightData = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength);

await tf.setBackend('cpu');
const model = await tf.loadGraphModel(tf.io.fromMemory(art));
const raw = readFileSync(inPath);
const doubles = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
const parts = new Float32Array(doubles.length * 3);
doubles.forEach((x, i) => {
  const a = Math.fround(x);
  let b = 0, c = 0;
  if (Number.isFinite(a)) { b = Math.fround(x - a); c = Math.fround(x - a - b); }
  parts[3 * i] = a; parts[3 * i + 1] = b; parts[3 * i + 2] = c;
});
const x = tf.tensor3d(parts, [Number(n), Number(f), 3], 'float32');
const out = model.execute(x);
const proba = await (Array.isArray(out) ? out[0] : out).data();
writeFileSync(outPath, Buffer.from(proba.buffer, proba.byteOffset, proba.byteLength));
