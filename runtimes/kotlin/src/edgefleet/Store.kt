// The on-device model store: two slots (A/B) per model, an anti-rollback floor kept in two
// files, atomic writes (temp file + fsync + rename + directory fsync), and a canary replay
// through the app's Scorer before a new slot becomes active. A slot whose canaries fail never
// becomes active: the previous model keeps serving (the install is reverted) and the slot is cleared.
package edgefleet

import java.io.File
import java.io.FileOutputStream
import java.nio.channels.FileChannel
import java.nio.file.AtomicMoveNotSupportedException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.nio.file.StandardOpenOption

/**
 * Runs a TFLite model file on an input tensor: on Android, `Interpreter(file)` from LiteRT
 * (`interpreter.run(input.toByteBuffer(), output)`), built once per installed file and closed
 * when the store swaps models. Returns [rows][classes] probabilities.
 */
fun interface Scorer {
    fun predict(model: File, input: TensorInput): Array<DoubleArray>
}

class HealthCheckError(message: String, val failures: List<String>) : EdgefleetException(message)
class InstallRefused(message: String) : EdgefleetException(message)

object AtomicFiles {
    /** Write [data] to [target] so a crash leaves either the old file or the new one, never a torn one. */
    fun write(target: File, data: ByteArray) {
        target.parentFile.mkdirs()
        val tmp = File(target.parentFile, ".${target.name}.tmp")
        FileOutputStream(tmp).use { out -> out.write(data); out.fd.sync() }
        try {
            Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        } catch (e: AtomicMoveNotSupportedException) {
            Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.REPLACE_EXISTING)
        }
        syncDir(target.parentFile)
    }

    fun syncDir(dir: File) {
        try { FileChannel.open(dir.toPath(), StandardOpenOption.READ).use { it.force(true) } } catch (e: java.io.IOException) { /* not on every FS */ }
    }
}

/** A verified, active model: its file for the interpreter, its manifest and its encoder. */
class LocalModel(val name: String, val version: Long, val file: File, val manifest: VerifiedManifest, val encoder: RecordEncoder, val slot: String) {
    val classes: List<Any?> get() = manifest.map["output"].obj()["classes"].arr()
    val threshold: Double get() = Py.toDouble(manifest.map["output"].obj()["threshold"])

    /** The label for one row of probabilities, by the manifest's rule (binary: p1 > threshold). */
    fun label(p: DoubleArray): Any? = if (classes.size == 2) (if (p[1] > threshold) classes[1] else classes[0]) else classes[p.indices.maxByOrNull { p[it] }!!]
}

class ModelStore(val root: File, private val trusted: TrustedKeys, private val scorer: Scorer, val format: String = "tflite") {
    private fun dir(model: String) = File(root, model)
    private fun stateFile(model: String) = File(dir(model), "state.json")
    private fun floorFile(model: String) = File(dir(model), "floor")

    var lastHealthCheck: Map<String, Any?>? = null
        private set

    @Synchronized
    fun state(model: String): Map<String, Any?> {
        val f = stateFile(model)
        val s = if (f.exists()) try { Json.parse(f.readBytes()).obj() } catch (e: JsonError) { null } else null
        val floor2 = floorFile(model).takeIf { it.exists() }?.readText()?.trim()?.toLongOrNull() ?: 0L
        val floor = maxOf((s?.get("floor") as? Long) ?: 0L, floor2)
        return mapOf("active" to s?.get("active"), "slots" to (s?.get("slots") ?: emptyMap<String, Any?>()), "floor" to floor)
    }

    private fun writeState(model: String, active: String?, slots: Map<String, Any?>, floor: Long) {
        AtomicFiles.write(floorFile(model), "$floor\n".toByteArray())
        AtomicFiles.write(stateFile(model), Json.canonical(mapOf("active" to active, "slots" to slots, "floor" to floor)))
    }

    /** Install a downloaded bundle .tar. [rollback] is only ever set from a signed assignment. */
    @Synchronized
    fun install(tar: File, rollback: Boolean = false): LocalModel {
        val (bundle, manifest) = BundleVerifier.verifyFile(tar, trusted, allowPartial = true)
        val art = manifest.artifact(format) ?: throw InstallRefused("${manifest.name} v${manifest.version} has no $format artifact")
        val artBytes = bundle.files[art["path"] as String] ?: throw InstallRefused("the bundle does not carry its $format artifact")
        val model = manifest.name
        val st = state(model)
        val floor = st["floor"] as Long
        val active = active(model)
        val v = manifest.version
        if (!rollback) {
            if (active != null && v <= active.version) throw InstallRefused("version $v is not above the active v${active.version}; a lower version needs a signed rollback assignment")
            if (v < floor) throw InstallRefused("version $v is below the anti-rollback floor $floor; a lower version needs a signed rollback assignment")
        }
        val slot = if (st["active"] == "a") "b" else "a"
        val slotDir = File(dir(model), slot)
        slotDir.deleteRecursively()
        AtomicFiles.write(File(slotDir, "bundle.tar"), tar.readBytes())
        AtomicFiles.write(File(slotDir, "model.$format"), artBytes)
        val candidate = load(model, slot) ?: throw InstallRefused("slot $slot did not verify after it was written")
        val failures = canaries(candidate)
        lastHealthCheck = mapOf("slot" to slot, "version" to v, "rows" to canaryRows(candidate).size, "failures" to failures)
        if (failures.isNotEmpty()) {
            slotDir.deleteRecursively()
            AtomicFiles.syncDir(dir(model))
            throw HealthCheckError("health check failed: ${failures.size} canary row(s): ${failures.take(3).joinToString("; ")}; " +
                (if (active != null) "reverted to v${active.version}" else "no model is active"), failures)
        }
        @Suppress("UNCHECKED_CAST")
        val slots = LinkedHashMap(st["slots"] as Map<String, Any?>)
        slots[slot] = mapOf("version" to v, "sha256" to hex(sha256(File(slotDir, "bundle.tar").readBytes())))
        writeState(model, slot, slots, maxOf(floor, v))
        return candidate
    }

    private fun canaryRows(m: LocalModel): List<Map<String, Any?>> = m.manifest.map["canary"].obj()["rows"].arr().map { it.obj() }

    /** Replay the manifest's canary rows through the Scorer; one message per failing row. */
    fun canaries(m: LocalModel): List<String> {
        val canary = m.manifest.map["canary"].obj()
        val tol = (canary["tolerance"] as? Number)?.toDouble() ?: 1e-5
        val rows = canaryRows(m)
        if (rows.isEmpty()) return listOf("the bundle has no canary rows to check")
        val probs = try {
            scorer.predict(m.file, m.encoder.encode(rows.map { it["input"] }))
        } catch (e: Exception) {
            return listOf("canary: ${e::class.simpleName}: ${e.message}")
        }
        val out = ArrayList<String>()
        rows.forEachIndexed { i, row ->
            val want = row["probabilities"].arr().map { Py.toDouble(it) }
            val got = probs[i]
            val diff = want.indices.maxOf { Math.abs(got[it] - want[it]) }
            val label = m.label(got)
            if (!(diff <= tol) || !ManifestSchema.same(label, row["label"])) {
                out.add("canary $i: probability off by ${"%.3g".format(diff)} (tolerance ${Py.floatRepr(tol).removeSuffix(".0")}) or label ${Py.repr(label)} != ${Py.repr(row["label"])}")
            }
        }
        return out
    }

    /** The slot verified again from disk (never the bytes of an unverified file). */
    private fun load(model: String, slot: String): LocalModel? {
        val tar = File(File(dir(model), slot), "bundle.tar")
        val file = File(File(dir(model), slot), "model.$format")
        if (!tar.exists() || !file.exists()) return null
        return try {
            val (_, m) = BundleVerifier.verifyFile(tar, trusted, allowPartial = true)
            val art = m.artifact(format) ?: return null
            if (hex(sha256(file.readBytes())) != art["sha256"]) return null
            LocalModel(m.name, m.version, file, m, RecordEncoder.forManifest(m.map, format), slot)
        } catch (e: EdgefleetException) {
            null
        }
    }

    /** Set when the active slot failed verification on load and the other verified slot took over. */
    var fallback: Map<String, Any?>? = null
        private set

    /** The active model, verified from disk; null when none is installed. A slot changed on disk
     *  is never used: the other slot, if it verifies, serves instead ([fallback] says so). */
    @Synchronized
    fun active(model: String): LocalModel? {
        val slot = state(model)["active"] as? String ?: return null
        load(model, slot)?.let { return it }
        val other = load(model, if (slot == "a") "b" else "a") ?: return null
        fallback = mapOf("to_version" to other.version, "reason" to "slot $slot of $model failed verification on load")
        return other
    }

    @Synchronized
    fun previous(model: String): LocalModel? {
        val a = state(model)["active"] as? String ?: return null
        return load(model, if (a == "a") "b" else "a")
    }

    fun list(): List<LocalModel> = (root.listFiles() ?: emptyArray()).filter { it.isDirectory }.sortedBy { it.name }.mapNotNull { active(it.name) }

    /** Delete a model's files; its anti-rollback floor stays, so a re-download cannot go below it. */
    @Synchronized
    fun delete(model: String): Boolean {
        val d = dir(model)
        if (!d.exists()) return false
        val floor = state(model)["floor"] as Long
        File(d, "a").deleteRecursively(); File(d, "b").deleteRecursively()
        writeState(model, null, emptyMap(), floor)
        return true
    }
}
