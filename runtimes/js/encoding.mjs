// The edgefleet.v1 input encoding in JS: records -> the float64 rows every tensor artifact takes.
//
// A line-by-line mirror of edgefleet/encoding.py (`encode_records`), including the order in
// which problems are found (structure row by row first, then column by column) and the exact
// error text, so a record is accepted, refused or encoded identically in Python and in the
// browser. tests/vectors/*.json (written by tests/web/vectors.py from Python) pins both sides.
//
// JS cannot tell 1 from 1.0 (Python's JSON can): an integral number counts as Python's `int`
// here. The vectors avoid that corner; it changes only the type named in an error message and
// whether a boolean field takes 1.0.

export class InputError extends Error {
  /** A record does not match the input schema; `field` names the offending field. */
  constructor(field, reason) {
    super(`field ${pyRepr(field)}: ${reason}`);
    this.name = 'InputError';
    this.field = field;
    this.reason = reason;
  }
}

const isMissing = (v) => v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v));

/** Python's type(v).__name__ for a JSON-ish JS value. */
export function pyType(v) {
  if (v === null || v === undefined) return 'NoneType';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'string') return 'str';
  if (Array.isArray(v)) return 'list';
  return 'dict';
}

function pyStr(s) {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = q;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '\\') out += '\\\\';
    else if (ch === q) out += '\\' + q;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + q;
}

/** Python's repr(float): shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export function pyFloat(x) {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e');
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  let body;
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    body = `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  } else if (exp < 0) {
    body = `0.${'0'.repeat(-exp - 1)}${digits}`;
  } else if (digits.length <= exp + 1) {
    body = `${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  } else {
    body = `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  return (neg ? '-' : '') + body;
}

/** Python's repr() of a JSON-ish value, as encoding.py's messages show it. */
export function pyRepr(v) {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloat(v);
  if (typeof v === 'string') return pyStr(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  return `{${Object.entries(v).map(([k, x]) => `${pyStr(k)}: ${pyRepr(x)}`).join(', ')}}`;
}

/** Python's str() of a number (`f"{v}"`). */
const pyNumStr = (v) => (Number.isInteger(v) ? String(v) : pyFloat(v));

/** Category keys compare as JSON values: 1 == 1.0, but "1" != 1 and true is not 1. */
function catKey(v) {
  if (typeof v === 'boolean') return `b:${v}`;
  if (typeof v === 'number') return `n:${v}`;
  if (typeof v === 'string') return `s:${v}`;
  return `o:${pyRepr(v)}`;
}

function encodeCategorical(field, values, out, j, F) {
  const name = field.name;
  const cats = field.categories || [];
  const index = new Map();
  cats.forEach((c, k) => { if (c !== null) index.set(catKey(c), k); });  // a repeated category: the last wins, as in a dict
  const nanIdx = cats.findIndex((c) => c === null);
  const policy = field.missing || 'reject';
  const fill = field.fill ?? null;
  const ignore = (field.unseen || 'reject') === 'ignore';
  const allStrings = cats.length > 0 && cats.every((c) => c === null || typeof c === 'string');
  let missingCode = -1;
  if (nanIdx >= 0) missingCode = nanIdx;
  else if (fill !== null) missingCode = index.has(catKey(fill)) ? index.get(catKey(fill)) : -1;
  values.forEach((v, i) => {
    if (isMissing(v)) {
      if (policy === 'reject') throw new InputError(name, `row ${i}: value is missing and the model has no rule for a missing ${name}`);
      out[i * F + j] = missingCode;
      return;
    }
    if (typeof v === 'number' && !Number.isFinite(v)) throw new InputError(name, `row ${i}: value ${pyFloat(v)} is not finite`);
    if (allStrings && typeof v !== 'string') {
      throw new InputError(name, `row ${i}: expected a string category, got ${pyType(v)} ${pyRepr(v)}`);
    }
    let k = index.get(catKey(v));
    if (k === undefined) {
      if (!ignore) {
        const shown = cats.slice(0, 8).map(pyRepr).join(', ') + (cats.length > 8 ? ' ...' : '');
        throw new InputError(name, `row ${i}: unseen category ${pyRepr(v)} (known: ${shown})`);
      }
      k = -1;
    }
    out[i * F + j] = k;
  });
}

function encodeNumeric(field, values, out, j, F) {
  const { name, type } = field;
  const impute = (field.missing || 'reject') === 'impute';
  values.forEach((v, i) => {
    if (isMissing(v)) {
      if (!impute) throw new InputError(name, `row ${i}: value is missing and the model does not impute ${name}`);
      out[i * F + j] = NaN;
      return;
    }
    if (type === 'boolean') {
      if (typeof v === 'boolean' || (typeof v === 'number' && (v === 0 || v === 1))) { out[i * F + j] = v ? 1 : 0; return; }
      if (typeof v === 'string' && ['true', 'false'].includes(v.toLowerCase())) { out[i * F + j] = v.toLowerCase() === 'true' ? 1 : 0; return; }
      throw new InputError(name, `row ${i}: expected a boolean, got ${pyType(v)} ${pyRepr(v)}`);
    }
    if (typeof v !== 'number') throw new InputError(name, `row ${i}: expected a number, got ${pyType(v)} ${pyRepr(v)}`);
    if (!Number.isFinite(v)) throw new InputError(name, `row ${i}: value ${pyNumStr(v)} is not finite`);
    out[i * F + j] = v;
  });
}

/**
 * Encode records strictly (every field present, no unexpected field, valid values) into a
 * row-major Float64Array of shape [records.length, fields.length]; throws InputError.
 */
export function encodeRecords(fields, records) {
  const names = fields.map((f) => f.name);
  const known = new Set(names);
  const rows = Array.from(records);
  rows.forEach((rec, i) => {
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
      throw new InputError('<record>', `row ${i}: expected an object of field values, got ${pyType(rec)}`);
    }
    for (const name of names) if (!Object.prototype.hasOwnProperty.call(rec, name)) throw new InputError(name, `row ${i}: missing field`);
    for (const key of Object.keys(rec)) {
      if (!known.has(key)) throw new InputError(key, `row ${i}: unexpected field (the model takes: ${names.join(', ')})`);
    }
  });
  const F = fields.length;
  const out = new Float64Array(rows.length * F);
  fields.forEach((f, j) => {
    const col = rows.map((r) => r[f.name]);
    if (f.type === 'categorical') encodeCategorical(f, col, out, j, F);
    else encodeNumeric(f, col, out, j, F);
  });
  return out;
}

/**
 * float64-split-float32x3 (docs/bundle-format.md): each double x as three float32 parts that
 * add back to it exactly, for TF.js, which has neither float64 nor int64.
 */
export function split3(doubles) {
  const parts = new Float32Array(doubles.length * 3);
  for (let i = 0; i < doubles.length; i++) {
    const x = doubles[i];
    const a = Math.fround(x);
    let b = 0, c = 0;
    if (Number.isFinite(a)) { b = Math.fround(x - a); c = Math.fround(x - a - b); }
    parts[3 * i] = a; parts[3 * i + 1] = b; parts[3 * i + 2] = c;
  }
  return parts;
}
