// A persistent telemetry outbox for browsers: scoring never waits on the network.
//
// Messages (docs/protocol.md: `{id, kind, created, body}`, id = uuid4 hex) go into a bounded
// queue persisted in `storage` (localStorage by default) and leave in batches of at most 500
// messages / 256 KiB as `{"device_id", "sent_at", "messages"}` POSTs. A message is removed only
// after a 2xx (at least once; the server deduplicates by id). A 4xx other than 408/429 drops the
// batch (retrying cannot help) and counts it; network errors and 5xx retry with exponential
// backoff and full jitter, and the browser's `online` event flushes at once.

const MAX_BATCH = 500;
const MAX_BATCH_BYTES = 256 * 1024;

class MemoryStorage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
}

const uuidHex = () => globalThis.crypto.randomUUID().replaceAll('-', '');

export class TelemetryQueue {
  constructor({ endpoint, deviceId, storage = globalThis.localStorage || new MemoryStorage(), key = 'edgefleet.outbox',
    maxMessages = 5000, fetchFn = globalThis.fetch?.bind(globalThis), backoffBase = 1000, backoffCap = 60000, onChange = null } = {}) {
    Object.assign(this, { endpoint, deviceId, storage, key, maxMessages, fetchFn, backoffBase, backoffCap, onChange });
    this.attempt = 0;
    this.timer = null;
    this.flushing = null;
    const saved = JSON.parse(storage.getItem(key) || '{"messages":[],"dropped":0,"sent":0}');
    this.state = { messages: saved.messages || [], dropped: saved.dropped || 0, sent: saved.sent || 0 };
    if (globalThis.addEventListener) globalThis.addEventListener('online', () => this.flush());
  }

  get depth() { return this.state.messages.length; }

  _save() {
    this.storage.setItem(this.key, JSON.stringify(this.state));
    this.onChange?.(this.stats());
  }

  stats() { return { depth: this.depth, dropped: this.state.dropped, sent: this.state.sent }; }

  /** Queue one message; the oldest are dropped (and counted) when the bound is reached. */
  push(kind, body) {
    this.state.messages.push({ id: uuidHex(), kind, created: Date.now() / 1000, body });
    const over = this.state.messages.length - this.maxMessages;
    if (over > 0) { this.state.messages.splice(0, over); this.state.dropped += over; }
    this._save();
  }

  /** The protocol's `prediction` body for one scored record. */
  prediction(manifest, record, result, { includeFeatures = true, entityId = null } = {}) {
    const body = { device_id: this.deviceId, ts: new Date().toISOString(), model: manifest.name, model_version: manifest.version,
      score: result.probability, label: result.label, sample_rate: 1.0, runtime: result.runtime };
    if (entityId !== null) body.entity_id = entityId;
    if (includeFeatures) body.features = record;
    this.push('prediction', body);
  }

  _batch() {
    const out = [];
    let bytes = 64;
    for (const m of this.state.messages) {
      const size = JSON.stringify(m).length + 1;
      if (out.length >= MAX_BATCH || (out.length && bytes + size > MAX_BATCH_BYTES)) break;
      out.push(m);
      bytes += size;
    }
    return out;
  }

  _retryLater() {
    if (this.timer) return;
    const delay = Math.random() * Math.min(this.backoffCap, this.backoffBase * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => { this.timer = null; this.flush(); }, delay);
  }

  /** Send everything queued; resolves to the number of messages delivered in this call. */
  flush() {
    if (!this.flushing) this.flushing = this._flush().finally(() => { this.flushing = null; });
    return this.flushing;
  }

  async _flush() {
    let delivered = 0;
    while (this.depth) {
      const batch = this._batch();
      let resp;
      try {
        resp = await this.fetchFn(this.endpoint, { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ device_id: this.deviceId, sent_at: new Date().toISOString(), messages: batch }) });
      } catch {
        this._retryLater();
        return delivered;
      }
      const retryable = resp.status >= 500 || resp.status === 408 || resp.status === 429;
      if (retryable) { this._retryLater(); return delivered; }
      const ids = new Set(batch.map((m) => m.id));
      this.state.messages = this.state.messages.filter((m) => !ids.has(m.id));
      if (resp.ok) { this.state.sent += batch.length; delivered += batch.length; } else { this.state.dropped += batch.length; }
      this.attempt = 0;
      this._save();
    }
    return delivered;
  }
}
