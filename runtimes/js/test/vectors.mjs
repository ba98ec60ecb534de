// Check the JS runtime against the shared vectors that Python wrote (tests/web/vectors.py).
//
//   node runtimes/js/test/vectors.mjs VECTORS.json [BUNDLE_DIR PUBLIC.pem]
//
// Always: every encoding case (encoded rows bit for bit, or the same error: field, reason and
// message). With a bundle folder and its publisher key, also: signature and artifact checks
// (and that a one-byte change is refused), and TF.js scoring in Node (pure-JS cpu backend)
// against the vectors' expected probabilities. Prints one JSON summary line; exits 1 on failure.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { encodeRecords, InputError, pyFloat } from '../encoding.mjs';
import { TfjsBackend } from '../backends.mjs';
import { importPublicKey, verifyArtifact, verifyManifest, VerificationError } from '../verify.mjs';

const [vectorsPath, bundleDir, pubPath] = process.argv.slice(2);
const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8'));
const failures = [];
const decode = (v) => {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === '$float') return Number(v.$float.replace('inf', 'Infinity').replace('nan', 'NaN'));
    return Object.fromEntries(keys.map((k) => [k, decode(v[k])]));
  }
  return Array.isArray(v) ? v.map(decode) : v;
};

let encodingCases = 0;
for (const c of vectors.encoding) {
  encodingCases += 1;
  const fields = vectors.schemas[c.schema];
  let got;
  try {
    got = { encoded: encodeRecords(fields, decode(c.records)) };
  } catch (exc) {
    if (!(exc instanceof InputError)) throw exc;
    got = { error: { field: exc.field, reason: exc.reason, message: exc.message } };
  }
  if (c.error) {
    if (!got.error || JSON.stringify(got.error) !== JSON.stringify(c.error)) failures.push({ case: c.about, want: c.error, got: got.error || 'encoded' });
  } else if (got.error) {
    failures.push({ case: c.about, want: 'encoded', got: got.error });
  } else {
    const want = c.encoded.flat().map((x) => (x === null ? NaN : x));
    const same = want.length === got.encoded.length && want.every((x, i) => Object.is(x, got.encoded[i]) || (Number.isNaN(x) && Number.isNaN(got.encoded[i])));
    if (!same) failures.push({ case: c.about, want: c.encoded, got: Array.from(got.encoded) });
  }
}
for (const [x, want] of [[1e-5, '1e-05'], [1.5e16, '1.5e+16'], [0.0001, '0.0001'], [123.25, '123.25'], [1e22, '1e+22'], [-2.5e-7, '-2.5e-07']]) {
  if (pyFloat(x) !== want) failures.push({ case: `pyFloat(${x})`, want, got: pyFloat(x) });
}

const summary = { encoding_cases: encodingCases };
if (bundleDir) {
  const read = (p) => new Uint8Array(readFileSync(join(bundleDir, p)));
  const trusted = [await importPublicKey(readFileSync(pubPath, 'utf8'))];
  const manifestBytes = read('manifest.json');
  const manifest = await verifyManifest(bundleDir, manifestBytes, readFileSync(join(bundleDir, 'signature'), 'utf8'), trusted);
  for (const a of manifest.artifacts) await verifyArtifact(bundleDir, a, read(a.path));
  const refused = async (fn) => { try { await fn(); return false; } catch (exc) { return exc instanceof VerificationError; } };
  const bad = manifestBytes.slice();
  bad[bad.length - 2] ^= 1;
  if (!await refused(() => verifyManifest(bundleDir, bad, readFileSync(join(bundleDir, 'signature'), 'utf8'), trusted))) failures.push({ case: 'a changed manifest byte is refused' });
  const entry = manifest.artifacts[0];
  const art = read(entry.path);
  art[100] ^= 1;
  if (!await refused(() => verifyArtifact(bundleDir, entry, art))) failures.push({ case: 'a changed artifact byte is refused' });

  const here = fileURLToPath(new URL('.', import.meta.url));
  const tf = createRequire(join(resolve(here, '../../..'), 'package.json'))('@tensorflow/tfjs');
  const tfEntry = manifest.artifacts.find((a) => a.format === 'tfjs');
  const sc = vectors.scoring;
  if (tfEntry && sc) {
    const backend = await TfjsBackend.create(tf, tfEntry, read(tfEntry.path), manifest);
    const fields = manifest.input_schema.fields;
    const proba = await backend.predict(encodeRecords(fields, sc.records), sc.records.length, fields.length);
    let maxDiff = 0;
    proba.forEach((p, i) => p.forEach((x, k) => { maxDiff = Math.max(maxDiff, Math.abs(x - sc.expected.tfjs[i][k])); }));
    summary.tfjs_node_max_abs_diff = maxDiff;
    if (!(maxDiff <= sc.tolerance)) failures.push({ case: 'tfjs (Node) probabilities', maxDiff });
  }
}
summary.failures = failures;
console.log(JSON.stringify(summary));
process.exit(failures.length ? 1 : 0);
