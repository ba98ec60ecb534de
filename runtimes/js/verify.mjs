// Bundle verification with WebCrypto, in the order of docs/bundle-format.md, trusting nothing
// before the end: (1) Ed25519 over manifest.json's exact downloaded bytes (never re-serialised),
// (2) only then parse it and check the format version, (3) each artifact's size, then sha256.
// No IO here: bundle.mjs fetches and caches, this module only judges bytes (python-tuf's split
// between the updater and its trusted-metadata state machine).

export class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

/** Signature, size or sha256 mismatch, or no trusted key: the bytes must not be used. */
export class VerificationError extends BundleError {
  constructor(message) { super(message); this.name = 'VerificationError'; }
}

export const FORMAT_NAME = 'edgefleet.bundle';
export const FORMAT_VERSION = 1;
const SPKI_ED25519_PREFIX = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

const subtle = () => {
  if (!globalThis.crypto?.subtle) throw new VerificationError('WebCrypto is unavailable: the page must be served over https or from localhost');
  return globalThis.crypto.subtle;
};

export function base64ToBytes(text) {
  const clean = String(text).trim();
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean) || clean.length % 4 !== 0) throw new VerificationError('the signature file is not base64');
  const bin = atob(clean);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(bytes) {
  return hex(await subtle().digest('SHA-256', bytes));
}

/**
 * A trusted Ed25519 public key from PEM (SubjectPublicKeyInfo, as `edgefleet keys generate`
 * writes it) or the base64 of the raw 32 bytes. key_id = first 16 hex of sha256(raw key).
 */
export async function importPublicKey(text) {
  let raw;
  const pem = String(text).match(/-----BEGIN PUBLIC KEY-----([\s\S]*?)-----END PUBLIC KEY-----/);
  if (pem) {
    const der = base64ToBytes(pem[1].replace(/\s+/g, ''));
    const prefixOk = der.length === 44 && SPKI_ED25519_PREFIX.every((b, i) => der[i] === b);
    if (!prefixOk) throw new VerificationError('trusted key: not an Ed25519 public key (SubjectPublicKeyInfo PEM)');
    raw = der.slice(12);
  } else {
    raw = base64ToBytes(text);
    if (raw.length !== 32) throw new VerificationError('trusted key: expected PEM or the base64 of 32 raw Ed25519 bytes');
  }
  let key;
  try {
    key = await subtle().importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
  } catch (exc) {
    throw new VerificationError(`trusted key: this browser's WebCrypto has no Ed25519 (${exc.message})`);
  }
  return { key, keyId: (await sha256Hex(raw)).slice(0, 16) };
}

function claimedKeyId(manifestBytes) {
  try {
    const v = JSON.parse(new TextDecoder().decode(manifestBytes)).key_id;
    return typeof v === 'string' ? v : null;
  } catch { return null; }
}

/**
 * Check the signature over the manifest's exact bytes with the trusted key it names (by key
 * id; else the first, so the error says which key signed it), then parse and check the format.
 * `trusted` is a list of importPublicKey() results. Returns the now-trusted manifest object.
 */
export async function verifyManifest(source, manifestBytes, signatureText, trusted) {
  if (!trusted?.length) throw new VerificationError(`${source}: no trusted public key was given`);
  const signature = base64ToBytes(signatureText);
  const claimed = claimedKeyId(manifestBytes);
  const chosen = trusted.find((k) => k.keyId === claimed) || trusted[0];
  const ok = signature.length === 64 && await subtle().verify({ name: 'Ed25519' }, chosen.key, signature, manifestBytes);
  if (!ok) {
    const hint = claimed && claimed !== chosen.keyId ? ` (manifest names key ${claimed}, the trusted key is ${chosen.keyId})` : '';
    throw new VerificationError(`${source}: the manifest signature does not verify${hint}`);
  }
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(manifestBytes));
  } catch (exc) {
    throw new BundleError(`${source}: manifest.json is not valid JSON: ${exc.message}`);
  }
  if (manifest === null || typeof manifest !== 'object' || Array.isArray(manifest)) throw new BundleError(`${source}: manifest.json must hold a JSON object`);
  if (manifest.format !== FORMAT_NAME || manifest.format_version !== FORMAT_VERSION) {
    throw new BundleError(`${source}: unsupported bundle format ${JSON.stringify(manifest.format)} version ${JSON.stringify(manifest.format_version)}; this runtime reads ${FORMAT_NAME} v${FORMAT_VERSION}`);
  }
  return manifest;
}

/** Size first (cheap, and stops a huge substitute early), then sha256, against the signed entry. */
export async function verifyArtifact(source, entry, bytes) {
  if (bytes.byteLength !== entry.size) {
    throw new VerificationError(`${source}: artifact ${entry.path} (${entry.format}) has ${bytes.byteLength} bytes, the signed manifest says ${entry.size}`);
  }
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) {
    throw new VerificationError(`${source}: artifact ${entry.path} (${entry.format}) sha256 is ${digest}, the signed manifest says ${entry.sha256}: the file was changed or corrupted`);
  }
  return bytes;
}
