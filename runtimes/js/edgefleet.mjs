// edgefleet's browser (and Node) runtime: verified, offline-capable scoring of a signed bundle.
//
//   import { openScorer } from '/demo/runtime/edgefleet.mjs';
//   const scorer = await openScorer('/demo/bundle/churn/3/', {
//     trustedKeys: [pem], runtime: 'onnx',
//     libraries: { onnx: () => import('/demo/vendor/ort/ort.wasm.min.mjs') } });
//   scorer.score({ Contract: 'Month-to-month', tenure: 3, ... })
//   // -> { probability: 0.71, label: 1, version: 3, probabilities: [0.29, 0.71], runtime: 'onnx' }
//
// Workflow: bundle.mjs fetches (or takes from the cache) the manifest, signature and the chosen
// format's artifact; verify.mjs checks the Ed25519 signature and every artifact's size and
// sha256 before any byte reaches a runtime; encoding.mjs validates each record exactly like
// edgefleet/encoding.py; backends.mjs scores. Nothing is scored for input the model was not
// built for: a bad record throws InputError naming the field and the reason.

import { loadBundle } from './bundle.mjs';
import { BACKENDS } from './backends.mjs';
import { encodeRecords, InputError } from './encoding.mjs';
import { BundleError, importPublicKey, VerificationError } from './verify.mjs';

export { BundleError, InputError, VerificationError };
export { encodeRecords, split3 } from './encoding.mjs';
export { TelemetryQueue } from './telemetry.mjs';
export { loadBundle } from './bundle.mjs';
export { importPublicKey, verifyArtifact, verifyManifest } from './verify.mjs';

/** The formats this runtime can score, in the order 'auto' prefers them. */
export const FORMATS = ['onnx', 'tfjs'];

export class Scorer {
  constructor(manifest, backend, format, { offline = false, loadMs = 0 } = {}) {
    this.manifest = manifest;
    this.backend = backend;
    this.format = format;
    this.offline = offline;
    this.loadMs = loadMs;
    this.name = manifest.name;
    this.version = manifest.version;
    this.fields = manifest.input_schema.fields;
    this.classes = manifest.output.classes;
    this.threshold = Number(manifest.output.threshold);
  }

  get runtime() { return this.backend.name; }

  _prediction(p) {
    // float32 tree ensembles can sum to 1.0000001 (or -0): a reported probability is always in [0, 1], as in the Python runtime
    p = Array.from(p, (v) => (v <= 0 ? 0 : v > 1 ? 1 : v));
    if (this.classes.length === 2) {
      const pos = p[1];
      return { probability: pos, label: pos > this.threshold ? this.classes[1] : this.classes[0], version: this.version, probabilities: p, runtime: this.format };
    }
    let k = 0;
    p.forEach((v, i) => { if (v > p[k]) k = i; });
    return { probability: p[k], label: this.classes[k], version: this.version, probabilities: p, runtime: this.format };
  }

  /** Score records (an array); throws InputError before scoring if any record is invalid. */
  async scoreMany(records) {
    const rows = Array.from(records);
    if (!rows.length) return [];
    const features = encodeRecords(this.fields, rows);
    const proba = await this.backend.predict(features, rows.length, this.fields.length);
    return proba.map((p, i) => {
      if (!p.every(Number.isFinite)) throw new InputError('<record>', `row ${i}: model ${this.name} v${this.version} returned a non-finite probability`);
      return this._prediction(p);
    });
  }

  async score(record) {
    return (await this.scoreMany([record]))[0];
  }
}

/**
 * Load, verify and open the bundle at `baseUrl` with one runtime.
 *
 * options.trustedKeys  PEM strings (or base64 raw keys) of the publishers to trust
 * options.runtime      'onnx', 'tfjs' or 'auto' (the first of FORMATS the bundle and `libraries` offer)
 * options.libraries    {onnx: ort module or () => Promise<module>, tfjs: ...}
 * options.fetchFn, options.useCache, options.network  passed to loadBundle
 */
export async function openScorer(baseUrl, { trustedKeys, runtime = 'auto', libraries = {}, fetchFn, useCache = true, network = true } = {}) {
  const t0 = globalThis.performance?.now() ?? Date.now();
  const trusted = await Promise.all((trustedKeys || []).map(importPublicKey));
  const candidates = runtime === 'auto' ? FORMATS.filter((f) => libraries[f]) : [runtime];
  for (const f of candidates) {
    if (!BACKENDS[f]) throw new BundleError(`runtime: ${f} is not one of ${FORMATS.join(', ')}`);
    if (!libraries[f]) throw new BundleError(`runtime: no ${f} library was given to openScorer`);
  }
  const opts = { formats: candidates, useCache, network };
  if (fetchFn) opts.fetchFn = fetchFn;
  const { manifest, files, offline } = await loadBundle(baseUrl, trusted, opts);
  const entry = candidates.map((f) => manifest.artifacts.find((a) => a.format === f)).find(Boolean);
  const lib = typeof libraries[entry.format] === 'function' ? await libraries[entry.format]() : libraries[entry.format];
  const backend = await BACKENDS[entry.format].create(lib.default && !lib.InferenceSession && !lib.loadGraphModel ? lib.default : lib, entry, files[entry.path], manifest);
  const loadMs = (globalThis.performance?.now() ?? Date.now()) - t0;
  return new Scorer(manifest, backend, entry.format, { offline, loadMs });
}
