// Device telemetry, the same payloads as runtimes/python/telemetry.py (docs/protocol.md):
// sampled predictions (raw features only when the privacy switch allows), per-window sketches in
// the manifest's reference bins, delayed outcomes; all through a bounded on-disk outbox with
// idempotent message ids, removed only after the server's 2xx.
package edgefleet

import java.io.File
import java.util.UUID
import kotlin.random.Random

const val MAX_BATCH_MESSAGES = 500
const val MAX_BATCH_BYTES = 256 * 1024
const val MAX_FEATURE_CHARS = 256
const val MAX_FEATURES = 512

/** The shared binning rule (edgefleet.protocol.bin_index): bisect_right over sorted edges. */
fun binIndex(edges: DoubleArray, value: Double): Int {
    var lo = 0; var hi = edges.size
    while (lo < hi) { val mid = (lo + hi) ushr 1; if (value < edges[mid]) hi = mid else lo = mid + 1 }
    return lo
}

/**
 * One message per file (`<seq>-<id>.json`, written atomically), oldest first. At [maxMessages]
 * the oldest prediction is dropped first (sketches and outcomes are kept longer); drops are counted.
 */
class Outbox(val dir: File, val maxMessages: Int = 10_000) {
    var droppedPrediction = 0L
        private set
    var droppedRejected = 0L
        private set
    private var seq = 0L

    init {
        dir.mkdirs()
        seq = files().lastOrNull()?.name?.substringBefore('-')?.toLongOrNull() ?: 0L
    }

    fun files(): List<File> = (dir.listFiles { f -> f.name.endsWith(".json") && !f.name.startsWith(".") } ?: emptyArray()).sortedBy { it.name }

    val depth: Int get() = files().size

    @Synchronized
    fun put(kind: String, body: Map<String, Any?>): String {
        val all = files()
        if (all.size >= maxMessages) {
            val victim = all.firstOrNull { it.name.endsWith("-prediction.json") } ?: all.first()
            victim.delete(); if (victim.name.endsWith("-prediction.json")) droppedPrediction++
        }
        val id = UUID.randomUUID().toString().replace("-", "")
        val msg = mapOf("id" to id, "kind" to kind, "created" to System.currentTimeMillis() / 1000.0, "body" to body)
        seq++
        AtomicFiles.write(File(dir, "%016d-%s-%s.json".format(seq, id, kind)), Json.write(msg).toByteArray())
        return id
    }

    fun pending(limit: Int = MAX_BATCH_MESSAGES): List<Pair<File, Map<String, Any?>>> =
        files().take(limit).mapNotNull { f -> try { f to Json.parse(f.readBytes()).obj() } catch (e: JsonError) { f.delete(); null } }

    /**
     * Send everything pending in batches (at most 500 messages and 256 KiB each); a message leaves
     * only after a 2xx. A payload refusal halves the batch until the refused message is alone,
     * which is then dropped (counted). Returns the number of messages the server acknowledged.
     */
    fun flush(client: DeviceClient): Int {
        var acked = 0
        var size = MAX_BATCH_MESSAGES
        while (true) {
            var batch = pending(size)
            if (batch.isEmpty()) return acked
            while (batch.size > 1 && Json.write(envelope(client, batch)).toByteArray().size > MAX_BATCH_BYTES) batch = batch.take(batch.size / 2)
            try {
                client.postTelemetry(envelope(client, batch))
                batch.forEach { it.first.delete() }
                acked += batch.size
                size = MAX_BATCH_MESSAGES
            } catch (e: ProtocolError) {
                if (e.status in setOf(400, 409, 413, 415, 422)) {
                    if (batch.size == 1) { batch[0].first.delete(); droppedRejected++ } else size = batch.size / 2
                } else throw e
            }
        }
    }

    private fun envelope(client: DeviceClient, batch: List<Pair<File, Map<String, Any?>>>): Map<String, Any?> = linkedMapOf(
        "batch_id" to UUID.randomUUID().toString().replace("-", ""), "device_id" to client.credential.deviceId,
        "sent_at" to isoNow(), "messages" to batch.map { it.second })
}

/** Counts per field into the manifest's reference bins; every scored record counts. */
class Sketch(manifest: VerifiedManifest) {
    val model = manifest.name
    val version = manifest.version
    private val fields = manifest.fields
    private val ref = manifest.map["reference"].obj()
    private val edges: List<DoubleArray?> = fields.map { f ->
        if (f["type"] == "categorical") null else ref["fields"].obj()[f["name"]].obj()["edges"].arr().map { Py.toDouble(it) }.toDoubleArray()
    }
    private val counts: List<LongArray> = fields.mapIndexed { j, f -> LongArray(if (f["type"] == "categorical") f["categories"].arr().size else edges[j]!!.size + 1) }
    private val missing = LongArray(fields.size)
    private val unseen = LongArray(fields.size)
    private val scoreEdges = ref["score"].obj()["edges"].arr().map { Py.toDouble(it) }.toDoubleArray()
    private val scoreCounts = LongArray(scoreEdges.size + 1)
    var n = 0L
        private set

    /** [row]: the record's encoded doubles (RecordEncoder / Encoding.encodeRecords), in field order. */
    fun add(record: Map<String, Any?>, row: DoubleArray, score: Double) {
        edges.forEachIndexed { j, e ->
            val v = row[j]
            val raw = record[fields[j]["name"]]
            if (e == null) {
                when {
                    raw == null || (raw is Double && raw.isNaN()) -> missing[j]++
                    v < 0 -> unseen[j]++
                    else -> counts[j][v.toInt()]++
                }
            } else if (v.isNaN()) missing[j]++ else counts[j][binIndex(e, v)]++
        }
        scoreCounts[binIndex(scoreEdges, score)]++
        n++
    }

    fun toBody(windowStart: String, windowEnd: String, deviceId: String): Map<String, Any?> {
        val out = LinkedHashMap<String, Any?>()
        fields.forEachIndexed { j, f ->
            val entry = linkedMapOf<String, Any?>("counts" to counts[j].toList(), "missing" to missing[j])
            if (f["type"] == "categorical") entry["unseen"] = unseen[j]
            out[f["name"] as String] = entry
        }
        return linkedMapOf("device_id" to deviceId, "model" to model, "model_version" to version, "window_start" to windowStart,
            "window_end" to windowEnd, "n" to n, "fields" to out, "score" to mapOf("counts" to scoreCounts.toList()))
    }
}

/** Bound a record as kept in a prediction (MAX_FEATURE_CHARS per string, MAX_FEATURES fields); the cut names. */
fun boundFeatures(record: Map<String, Any?>): Pair<Map<String, Any?>, List<String>> {
    val out = LinkedHashMap<String, Any?>()
    val cut = ArrayList<String>()
    for ((i, e) in record.entries.withIndex()) {
        if (i >= MAX_FEATURES) { cut.add("..."); break }
        val name = e.key.take(MAX_FEATURE_CHARS)
        var v = e.value
        if ((v is Double && !v.isFinite())) v = null
        else if (!(v == null || v is Boolean || v is Number || v is String)) v = Json.write(v, allowNan = true)
        else if (v is Long && Math.abs(v.toDouble()) >= 9007199254740992.0) v = v.toString()
        if (v is String && v.length > MAX_FEATURE_CHARS) { v = v.take(MAX_FEATURE_CHARS); cut.add(name) } else if (name != e.key) cut.add(name)
        out[name] = v
    }
    return out to cut
}

class Telemetry(val outbox: Outbox, val deviceId: String, val sampleRate: Double = 1.0, val includeFeatures: Boolean = true,
                val windowSeconds: Double = 3600.0, private val random: Random = Random.Default) {
    private var sketch: Sketch? = null
    private var windowStart = System.currentTimeMillis()

    init { require(sampleRate in 0.0..1.0) { "sample_rate must be within [0, 1], got $sampleRate" } }

    @Synchronized
    fun onPrediction(model: LocalModel, record: Map<String, Any?>, row: DoubleArray, probability: Double, label: Any?, entityId: String? = null) {
        val now = System.currentTimeMillis()
        val s = sketch
        if (s != null && (s.version != model.version || now - windowStart >= windowSeconds * 1000)) flushWindowAt(now)
        if (sketch == null) { sketch = Sketch(model.manifest); windowStart = now }
        sketch!!.add(record, row, probability)
        if (sampleRate >= 1.0 || random.nextDouble() < sampleRate) {
            val body = linkedMapOf<String, Any?>("device_id" to deviceId, "ts" to iso(now), "model" to model.name, "model_version" to model.version,
                "score" to probability, "label" to label, "sample_rate" to sampleRate)
            if (entityId != null) body["entity_id"] = entityId.take(MAX_FEATURE_CHARS)
            if (includeFeatures) {
                val (kept, cut) = boundFeatures(record)
                body["features"] = kept
                if (cut.isNotEmpty()) body["truncated"] = cut
            }
            outbox.put("prediction", body)
        }
    }

    fun recordOutcome(entityId: String, label: Any?, observedAt: String? = null): String =
        outbox.put("outcome", mapOf("device_id" to deviceId, "entity_id" to entityId, "label" to label, "observed_at" to (observedAt ?: isoNow())))

    @Synchronized
    fun flushWindow(): String? = flushWindowAt(System.currentTimeMillis())

    private fun flushWindowAt(now: Long): String? {
        val s = sketch ?: return null
        sketch = null
        if (s.n == 0L) return null
        return outbox.put("sketch", s.toBody(iso(windowStart), iso(now), deviceId))
    }

    private fun iso(ms: Long): String = java.time.Instant.ofEpochMilli(ms).toString().let { t ->
        val s = t.removeSuffix("Z"); (if ('.' in s) s.substring(0, minOf(s.length, s.indexOf('.') + 4)).padEnd(s.indexOf('.') + 4, '0') else "$s.000") + "Z"
    }
}
