// Scoring backends: one per tensor artifact format a browser can run. Each takes the verified
// artifact bytes and the runtime library (injected, so the page loads only the one it uses and
// Node tests can pass their own), and maps encoded float64 rows to probabilities.
//
//   onnx  onnxruntime-web (wasm): float64 `features` [N, F] -> `probabilities` [N, classes]
//   tfjs  @tensorflow/tfjs (cpu backend; WebGL may compute in float16): float32 [N, F, 3]
//         (float64-split-float32x3) -> `probabilities` [N, classes]

import { split3 } from './encoding.mjs';
import { BundleError } from './verify.mjs';

function toRows(data, n, k) {
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(Array.from(data.subarray(i * k, (i + 1) * k)));
  return rows;
}

export class OnnxBackend {
  static format = 'onnx';

  static async create(ort, entry, bytes, manifest) {
    // A copy, not bytes.buffer: a view into a larger (pooled) buffer makes protobuf parsing fail.
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return new OnnxBackend(ort, session, entry, manifest);
  }

  constructor(ort, session, entry, manifest) {
    this.ort = ort;
    this.session = session;
    this.input = entry.inputs?.[0]?.name || 'features';
    this.output = (entry.outputs || []).find((o) => o.name === 'probabilities') ? 'probabilities' : session.outputNames[session.outputNames.length - 1];
    this.classes = manifest.output.classes.length;
    this.name = `onnxruntime-web ${ort.env?.versions?.web || ''}`.trim();
  }

  async predict(features, n, F) {
    const x = new this.ort.Tensor('float64', features, [n, F]);
    const out = await this.session.run({ [this.input]: x }, [this.output]);
    const t = out[this.output];
    const rows = toRows(t.data, n, this.classes);
    x.dispose?.();
    t.dispose?.();
    return rows;
  }
}

function base64ToBuffer(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

export class TfjsBackend {
  static format = 'tfjs';

  static async create(tf, entry, bytes, manifest) {
    const art = JSON.parse(new TextDecoder().decode(bytes));
    art.weightData = base64ToBuffer(art.weightData);
    if (tf.getBackend() !== 'cpu') await tf.setBackend('cpu');  // the stated parity holds on cpu/wasm, not WebGL
    await tf.ready();
    const model = await tf.loadGraphModel(tf.io.fromMemory(art));
    return new TfjsBackend(tf, model, entry, manifest);
  }

  constructor(tf, model, entry, manifest) {
    this.tf = tf;
    this.model = model;
    this.classes = manifest.output.classes.length;
    if (entry.inputs?.[0]?.encoding && entry.inputs[0].encoding !== 'float64-split-float32x3') {
      throw new BundleError(`tfjs: input encoding ${entry.inputs[0].encoding} is not one this runtime knows`);
    }
    this.name = `@tensorflow/tfjs ${tf.version?.tfjs || tf.version_core || ''} (${tf.getBackend()})`.trim();
  }

  async predict(features, n, F) {
    const x = this.tf.tensor3d(split3(features), [n, F, 3], 'float32');
    const out = this.model.execute(x);
    const t = Array.isArray(out) ? out[0] : out;
    const data = await t.data();
    this.tf.dispose([x, out]);
    return toRows(data, n, this.classes);
  }
}

export const BACKENDS = { onnx: OnnxBackend, tfjs: TfjsBackend };
