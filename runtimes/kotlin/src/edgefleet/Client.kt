// The fleet server's device protocol over HTTP (docs/protocol.md): enrol with a one-time token,
// poll the signed assignment with ETag / If-None-Match, download the bundle with Range resume
// and a progress callback, report status and capabilities, post telemetry batches. MQTT is
// optional on phones and not implemented here: HTTP polling with backoff and full jitter.
package edgefleet

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.net.HttpURLConnection
import java.net.URL
import java.time.Instant
import java.util.Base64
import kotlin.random.Random

class ProtocolError(message: String, val status: Int = 0) : EdgefleetException(message)

/** The credential file enrollment returns (docs/protocol.md "Identity and auth"). */
class Credential(val deviceId: String, val token: String, val server: String, val assignmentKeys: List<String>, val publisherKeys: List<String>, val raw: Map<String, Any?>) {
    companion object {
        fun parse(json: Map<String, Any?>): Credential {
            fun list(k: String) = (json[k] as? List<*>)?.map { it as String }
            val assignment = list("assignment_keys") ?: throw ProtocolError("credential: assignment_keys is missing (an older credential?): re-enroll the device")
            val trusted = list("trusted_keys")
            val publisher = list("publisher_keys") ?: trusted?.filter { it !in assignment } ?: throw ProtocolError("credential: publisher_keys is missing")
            if (publisher.any { it in assignment }) throw ProtocolError("credential: a key is listed as both an assignment key and a publisher key")
            return Credential(json["device_id"] as String, json["token"] as String, (json["server"] as String).trimEnd('/'), assignment, publisher, json)
        }
        fun load(file: File) = parse(Json.parse(file.readBytes()).obj())
    }

    fun save(file: File) {
        AtomicFiles.write(file, Json.write(raw).toByteArray())
        file.setReadable(false, false); file.setReadable(true, true); file.setWritable(false, false); file.setWritable(true, true)
    }
}

/** A signed assignment that verified: the device's desired model. */
class Assignment(val body: Map<String, Any?>) {
    val serial: Long get() = body["serial"] as Long
    val model: String get() = body["model"] as String
    val version: Long get() = body["version"] as Long
    val sha256: String get() = body["bundle_sha256"] as String
    val size: Long get() = body["size"] as Long
    val url: String get() = body["url"] as String
    val rollback: Boolean get() = body["rollback"] == true
}

/** Exponential backoff with full jitter: uniform(0, min(cap, base * 2^attempt)). */
class Backoff(val baseSeconds: Double = 1.0, val capSeconds: Double = 60.0, private val random: Random = Random.Default) {
    var attempt = 0
        private set
    fun next(): Double = random.nextDouble() * minOf(capSeconds, baseSeconds * Math.pow(2.0, (attempt++).toDouble()))
    fun reset() { attempt = 0 }
}

/** Download progress: bytes on disk so far (including a resumed part) of the total. */
fun interface Progress { fun update(done: Long, total: Long) }

class Http(val base: String, var token: String?, val timeoutMs: Int = 30_000) {
    class Response(val status: Int, val headers: Map<String, String>, val body: ByteArray) {
        fun json(): Any? = if (body.isEmpty()) null else Json.parse(body)
        fun error(): String = try { (json() as? Map<*, *>)?.get("error")?.toString() ?: String(body) } catch (e: JsonError) { String(body) }
    }

    fun open(method: String, path: String, headers: Map<String, String> = emptyMap()): HttpURLConnection {
        val c = URL(if (path.startsWith("http")) path else base + path).openConnection() as HttpURLConnection
        c.requestMethod = method
        c.connectTimeout = timeoutMs; c.readTimeout = timeoutMs
        c.instanceFollowRedirects = false
        token?.let { c.setRequestProperty("Authorization", "Bearer $it") }
        headers.forEach { (k, v) -> c.setRequestProperty(k, v) }
        return c
    }

    fun request(method: String, path: String, body: Any? = null, headers: Map<String, String> = emptyMap()): Response {
        val c = open(method, path, headers)
        try {
            if (body != null) {
                c.doOutput = true
                c.setRequestProperty("Content-Type", "application/json")
                c.outputStream.use { it.write(Json.write(body).toByteArray()) }
            }
            val status = c.responseCode
            val stream = if (status >= 400) c.errorStream else c.inputStream
            val data = stream?.use { it.readBytes() } ?: ByteArray(0)
            return Response(status, c.headerFields.filterKeys { it != null }.mapKeys { it.key.lowercase() }.mapValues { it.value.joinToString(",") }, data)
        } finally {
            c.disconnect()
        }
    }
}

class DeviceClient(val credential: Credential, val dataDir: File, val log: (String) -> Unit = {}) {
    val http = Http(credential.server, credential.token)
    val publisherKeys = TrustedKeys.fromPems(credential.publisherKeys)
    private val assignmentKeys = TrustedKeys.fromPems(credential.assignmentKeys)
    private val stateFile = File(dataDir, "client.json")
    private var etag: String? = null
    var lastSerial: Long = 0
        private set
    var lastAssignment: Assignment? = null
        private set

    init {
        dataDir.mkdirs()
        if (stateFile.exists()) {
            val s = Json.parse(stateFile.readBytes()).obj()
            lastSerial = (s["last_serial"] as? Long) ?: 0
            etag = s["etag"] as? String
        }
    }

    private fun saveState() = AtomicFiles.write(stateFile, Json.canonical(mapOf("last_serial" to lastSerial, "etag" to etag)))

    companion object {
        /** POST /api/v1/devices/enroll with a one-time enrollment token; the credential is saved 0600 when [saveTo] is given. */
        fun enroll(server: String, enrollmentToken: String, deviceId: String, saveTo: File? = null): Credential {
            val r = Http(server.trimEnd('/'), null).request("POST", "/api/v1/devices/enroll", mapOf("token" to enrollmentToken, "device_id" to deviceId))
            if (r.status != 201) throw ProtocolError("enroll: ${r.status} ${r.error()}", r.status)
            val cred = Credential.parse(r.json().obj())
            saveTo?.let { cred.save(it) }
            return cred
        }
    }

    /** Verify a signed assignment envelope: a trusted assignment key, this device, a new serial. */
    fun verifyAssignment(envelope: Map<String, Any?>): Assignment {
        val body = envelope["assignment"] as? Map<String, Any?> ?: throw ProtocolError("assignment: missing")
        val keyId = envelope["key_id"] as? String
        val key = keyId?.let { assignmentKeys.byId[it] } ?: throw ProtocolError("assignment: signed by an unknown key $keyId")
        val sig = try { Base64.getDecoder().decode(envelope["signature"] as String) } catch (e: Exception) { throw ProtocolError("assignment: signature is not base64") }
        if (!Keys.verify(key, sig, Json.canonical(body))) throw ProtocolError("assignment: the signature does not verify")
        if (body["device_id"] != credential.deviceId) throw ProtocolError("assignment: for device ${body["device_id"]}, not ${credential.deviceId}")
        val a = Assignment(body)
        if (a.serial <= lastSerial) throw ProtocolError("assignment: serial ${a.serial} is not above the last accepted ${lastSerial} (a replay)")
        return a
    }

    /** GET the assignment with If-None-Match. Null when unchanged (304) or none (404). */
    fun fetchAssignment(): Assignment? {
        val headers = etag?.let { mapOf("If-None-Match" to it) } ?: emptyMap()
        val r = http.request("GET", "/api/v1/devices/${credential.deviceId}/assignment", headers = headers)
        when (r.status) {
            304 -> { log("assignment unchanged (304)"); return null }
            404 -> return null
            200 -> {}
            else -> throw ProtocolError("assignment: ${r.status} ${r.error()}", r.status)
        }
        val env = r.json().obj()
        val a = try { verifyAssignment(env) } catch (e: ProtocolError) {
            if (e.message?.contains("a replay") == true) { etag = r.headers["etag"]; saveState(); return null }
            throw e
        }
        etag = r.headers["etag"]
        lastAssignment = a
        return a
    }

    /** Mark [a] done (installed or refused for good), so the same serial is not taken again. */
    fun accept(a: Assignment) { lastSerial = a.serial; saveState() }

    /**
     * Download [a]'s bundle into downloads/, resuming a .part file with Range / If-Range; checks
     * size and sha256 before the file leaves .part. An interrupted transfer keeps its bytes.
     */
    fun download(a: Assignment, progress: Progress = Progress { _, _ -> }): File {
        val dir = File(dataDir, "downloads").apply { mkdirs() }
        val done = File(dir, "${a.sha256}.tar")
        if (done.exists() && done.length() == a.size && hex(sha256(done.readBytes())) == a.sha256) return done
        val part = File(dir, "${a.sha256}.part")
        var have = if (part.exists()) part.length() else 0L
        if (have > a.size) { part.delete(); have = 0 }
        val headers = if (have > 0) mapOf("Range" to "bytes=$have-", "If-Range" to "\"${a.sha256}\"") else emptyMap()
        val c = http.open("GET", a.url, headers)
        try {
            val status = c.responseCode
            if (status >= 400) throw ProtocolError("download: $status ${c.errorStream?.use { String(it.readBytes()) }}", status)
            val append = status == 206
            if (append) log("download resumed at byte $have of ${a.size}") else if (have > 0) { log("download restarted: the server sent the whole file"); have = 0 }
            FileOutputStream(part, append).use { out ->
                c.inputStream.use { input ->
                    val buf = ByteArray(64 * 1024)
                    while (true) {
                        val n = input.read(buf)
                        if (n < 0) break
                        out.write(buf, 0, n)
                        have += n
                        progress.update(have, a.size)
                    }
                }
                out.fd.sync()
            }
        } finally {
            c.disconnect()
        }
        if (part.length() != a.size) throw IOException("download: ${part.length()} of ${a.size} bytes arrived; the transfer was cut (kept for resume)")
        val digest = hex(sha256(part.readBytes()))
        if (digest != a.sha256) { part.delete(); throw ProtocolError("download: sha256 is $digest, the assignment says ${a.sha256}") }
        java.nio.file.Files.move(part.toPath(), done.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING)
        return done
    }

    fun reportStatus(status: Map<String, Any?>) {
        val r = http.request("POST", "/api/v1/devices/${credential.deviceId}/status", status)
        if (r.status !in 200..299) throw ProtocolError("status: ${r.status} ${r.error()}", r.status)
    }

    /** POST a telemetry batch; (accepted, duplicates). A 4xx other than 408/429 is final. */
    fun postTelemetry(batch: Map<String, Any?>): Pair<Long, Long> {
        val r = http.request("POST", "/api/v1/devices/${credential.deviceId}/telemetry", batch)
        if (r.status !in 200..299) throw ProtocolError("telemetry: ${r.status} ${r.error()}", r.status)
        val b = r.json().obj()
        return (b["accepted"] as Long) to (b["duplicates"] as Long)
    }
}

fun isoNow(): String = Instant.now().toString().let { val s = it.removeSuffix("Z"); (if ('.' in s) s.substring(0, minOf(s.length, s.indexOf('.') + 4)) else "$s.000") + "Z" }
