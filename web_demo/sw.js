// Service worker of the demo: keeps the page, the runtime and its wasm/JS libraries so the page
// opens and scores with no server. Bundles are not handled here: the runtime (runtimes/js/
// bundle.mjs) keeps only *verified* manifests and artifacts in its own cache and re-verifies
// them on every load, so this worker never serves an unverified model byte.
const VERSION = 'edgefleet-demo-shell-v2';  // bumped with the page's files (model picker, phone layout)
let offlineUntil = 0;
const VENDOR = ['vendor/ort/ort.wasm.min.mjs', 'vendor/ort/ort-wasm-simd-threaded.mjs', 'vendor/ort/ort-wasm-simd-threaded.wasm',
  'vendor/tfjs/tf.fesm.min.js'];
const SHELL = ['./', 'style.css', 'app.mjs', 'favicon.svg', ...['edgefleet', 'encoding', 'verify', 'bundle', 'backends', 'telemetry']
  .map((m) => `runtime/${m}.mjs`)];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(VERSION).then((c) => c.addAll([...SHELL, ...VENDOR])).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key.startsWith('edgefleet-demo-shell-') && key !== VERSION) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (req.method !== 'GET' || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  const rel = url.pathname.slice(scope.pathname.length);
  if (rel.startsWith('bundle/') || rel.startsWith('telemetry')) return;  // the runtime decides, with verification
  if (rel.startsWith('vendor/')) {  // versioned by the lockfile: cache first
    event.respondWith(caches.match(req, { ignoreSearch: true }).then((hit) => hit || fetch(req)));
    return;
  }
  event.respondWith((async () => {  // page and runtime: fresh when the server answers, cached when not
    const cache = await caches.open(VERSION);
    const hit = await cache.match(req, { ignoreSearch: true });
    if (hit && Date.now() < offlineUntil) return hit;
    try {
      // A server that is down or hung must not hold the page: give up after a few seconds.
      const resp = await fetch(req, { cache: 'no-cache', signal: hit ? AbortSignal.timeout(3000) : undefined });
      if (resp.ok) await cache.put(req, resp.clone());
      return resp;
    } catch (err) {
      offlineUntil = Date.now() + 15000;  // the next requests go straight to the cache for a while
      if (hit) return hit;
      throw err;
    }
  })());
});
