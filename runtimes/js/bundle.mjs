// Fetch a bundle over HTTP, verify it (verify.mjs) and keep verified bytes for offline use.
//
// A bundle at a base URL is laid out like a bundle folder: `manifest.json`, `signature`,
// `artifacts/...`. The manifest and signature are fetched fresh when the network answers and
// fall back to the last copy that verified; artifacts are content-addressed, so a cached one is
// keyed by its sha256 and reused across versions. Everything read from the cache is verified
// again, exactly like a download: the cache is storage, not a trust anchor. The Cache API needs a
// secure context (https or localhost); without it (Node, plain http) the runtime works uncached.

import { BundleError, verifyArtifact, verifyManifest } from './verify.mjs';

export const CACHE_NAME = 'edgefleet-bundles-v1';

async function openCache() {
  try { return globalThis.caches ? await globalThis.caches.open(CACHE_NAME) : null; } catch { return null; }
}

/**
 * GET url; a network failure or no answer within `timeoutMs` (offline, server down or hung)
 * gives null, an HTTP error throws. Scoring never waits on the network for long.
 */
async function tryFetch(fetchFn, url, timeoutMs) {
  let resp;
  try {
    resp = await fetchFn(url, { cache: 'no-store', signal: AbortSignal.timeout(timeoutMs) });
  } catch {
    return null;
  }
  if (!resp.ok) throw new BundleError(`${url}: HTTP ${resp.status}`);
  return new Uint8Array(await resp.arrayBuffer());
}

const artifactKey = (base, sha) => new URL(`__edgefleet__/sha256/${sha}`, base).href;

async function cached(cache, key) {
  const r = cache && await cache.match(key);
  return r ? new Uint8Array(await r.arrayBuffer()) : null;
}

async function store(cache, key, bytes) {
  if (cache) await cache.put(key, new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } }));
}

/**
 * Load and verify the bundle at `baseUrl` (ending in '/'); return {manifest, files, offline}
 * with `files[path]` the verified bytes of the first artifact whose format is in the preference
 * list `formats` (every artifact when it is omitted).
 * `trusted` is a list of importPublicKey() results. `network: false` goes straight to the cached
 * manifest (the caller already knows it is offline); `timeoutMs` bounds each small request.
 */
export async function loadBundle(baseUrl, trusted, { formats = null, fetchFn = globalThis.fetch.bind(globalThis), useCache = true,
  network = true, timeoutMs = 8000 } = {}) {
  const base = new URL(baseUrl, globalThis.location?.href).href;
  const cache = useCache ? await openCache() : null;
  const mUrl = new URL('manifest.json', base).href;
  const sUrl = new URL('signature', base).href;
  let manifestBytes = network ? await tryFetch(fetchFn, mUrl, timeoutMs) : null;
  let sigBytes = manifestBytes && await tryFetch(fetchFn, sUrl, timeoutMs);
  let offline = false;
  if (!manifestBytes || !sigBytes) {
    [manifestBytes, sigBytes] = [await cached(cache, mUrl), await cached(cache, sUrl)];
    offline = true;
    if (!manifestBytes || !sigBytes) throw new BundleError(`${base}: the server cannot be reached and no verified copy of this bundle is cached`);
  }
  const manifest = await verifyManifest(base, manifestBytes, new TextDecoder().decode(sigBytes), trusted);
  const all = manifest.artifacts || [];
  const wanted = formats ? [formats.map((f) => all.find((a) => a.format === f)).find(Boolean)].filter(Boolean) : all;
  if (!wanted.length) throw new BundleError(`${base}: the bundle offers ${all.map((a) => a.format).join(', ')}, none of ${formats.join(', ')}`);
  const files = {};
  for (const entry of wanted) {
    if (!/^artifacts\/[A-Za-z0-9._-]+$/.test(entry.path || '')) throw new BundleError(`${base}: unsafe artifact path ${JSON.stringify(entry.path)}`);
    const key = artifactKey(base, entry.sha256);
    let bytes = await cached(cache, key);
    if (bytes) {
      try { await verifyArtifact(base, entry, bytes); } catch { bytes = null; }  // a damaged cache entry is refetched
    }
    if (!bytes) {
      bytes = await tryFetch(fetchFn, new URL(entry.path, base).href, 4 * timeoutMs);
      if (!bytes) throw new BundleError(`${base}: ${entry.path} is not cached and the server cannot be reached`);
      await verifyArtifact(base, entry, bytes);
      await store(cache, key, bytes);
    }
    files[entry.path] = bytes;
  }
  if (!offline) {  // only a manifest that verified, with its artifacts, replaces the offline copy
    await store(cache, mUrl, manifestBytes);
    await store(cache, sUrl, sigBytes);
  }
  return { manifest, files, offline };
}
