package edgefleet.test

import edgefleet.*
import java.io.File
import java.util.Base64

object VerifyTests {
    fun run(tar: File, pem: String, tmp: File) {
        tmp.mkdirs()
        val trusted = TrustedKeys.fromPems(listOf(pem))
        val good = tar.readBytes()
        val members = tarMembers(good)
        fun variant(name: String, bytes: ByteArray) = File(tmp, name).apply { writeBytes(bytes) }
        fun verify(f: File, partial: Boolean = false) = BundleVerifier.verify(BundleReader.open(f), trusted, partial)

        T.test("a correctly signed bundle verifies (all artifacts, and as a slim bundle)") {
            val m = verify(tar)
            check(m.name.isNotEmpty() && m.version >= 1) { "manifest" }
            verify(tar, partial = true)
        }
        T.test("a flipped artifact byte is refused by its sha256") {
            val (art, where) = members.entries.first { it.key.startsWith("artifacts/") }.let { it.key to it.value }
            val bad = good.copyOf(); bad[where.first + where.second / 2] = (bad[where.first + where.second / 2].toInt() xor 1).toByte()
            val e = refuses<VerificationError>("flipped byte") { verify(variant("flip.tar", bad)) }
            check(e.message!!.contains("artifact $art") && e.message!!.contains("the file was changed or corrupted")) { e.message!! }
        }
        T.test("a changed manifest field is refused by the signature") {
            val (off, size) = members["manifest.json"]!!
            val text = String(good, off, size, Charsets.UTF_8)
            val changed = text.replaceFirst(Regex("\"version\":(\\d)"), "\"version\":9")
            check(changed != text && changed.length == text.length) { "could not edit the version" }
            val bad = good.copyOf(); changed.toByteArray().copyInto(bad, off)
            val e = refuses<VerificationError>("changed field") { verify(variant("field.tar", bad)) }
            check(e.message!!.contains("signature does not match the manifest")) { e.message!! }
        }
        T.test("a key that is not trusted is refused, naming the key ids") {
            val other = TrustedKeys(listOf(ed25519Pair().public))
            val e = refuses<VerificationError>("wrong key") { BundleVerifier.verify(BundleReader.open(tar), other) }
            check(e.message!!.contains("not a trusted publisher key")) { e.message!! }
        }
        T.test("a signature by another key over the same manifest is refused") {
            val files = filesOf(tar).toMutableMap()
            files["signature"] = Base64.getEncoder().encode(sign(ed25519Pair().private, files["manifest.json"]!!))
            val e = refuses<VerificationError>("other signer") { verify(variant("resigned.tar", packTar(files))) }
            check(e.message!!.contains("signature does not match")) { e.message!! }
        }
        T.test("a file the signed manifest does not list is refused unread") {
            val files = filesOf(tar).toMutableMap(); files["run.sh"] = "rm -rf /".toByteArray()
            val e = refuses<VerificationError>("unlisted") { verify(variant("unlisted.tar", packTar(files))) }
            check(e.message!!.endsWith("files not listed in the signed manifest: run.sh")) { e.message!! }
        }
        T.test("a cut archive is refused as truncated") {
            val e = refuses<BundleError>("cut") { verify(variant("cut.tar", good.copyOf(good.size / 2))) }
            check(e.message!!.contains("truncated")) { e.message!! }
        }
        T.test("a slim bundle verifies only when partial bundles are allowed") {
            val files = filesOf(tar).toMutableMap()
            val drop = files.keys.first { it.startsWith("artifacts/") }
            files.remove(drop)
            val f = variant("slim.tar", packTar(files))
            verify(f, partial = true)
            val e = refuses<BundleError>("slim, strict") { verify(f) }
            check(e.message!!.contains("artifact $drop is missing from the bundle")) { e.message!! }
        }
    }
}

object Dump {
    /** Encode [records] (a JSON list) with the tflite artifact's encoder of the bundle and write the tensor bytes. */
    fun run(tar: File, pem: String, recordsFile: File, out: File) {
        val (_, m) = BundleVerifier.verifyFile(tar, TrustedKeys.fromPems(listOf(pem)), allowPartial = true)
        val enc = RecordEncoder.forManifest(m.map, "tflite")
        val records = Json.parse(recordsFile.readBytes()).arr()
        var input = enc.encode(records)
        val t0 = System.nanoTime()
        repeat(5) { input = enc.encode(records) }
        val us = (System.nanoTime() - t0) / 5.0 / 1000.0 / records.size
        val buf = input.toByteBuffer(); val bytes = ByteArray(buf.remaining()); buf.get(bytes)
        out.writeBytes(bytes)
        println(Json.write(mapOf("dtype" to input.dtype, "rows" to input.rows, "cols" to input.cols, "us_per_record" to us)))
    }
}

object SketchDump {
    /** [input]: {"records": [...], "scores": [...]}; writes the window's sketch body and two prediction bodies (features on, off). */
    fun run(tar: File, pem: String, input: File, out: File) {
        val (_, m) = BundleVerifier.verifyFile(tar, TrustedKeys.fromPems(listOf(pem)), allowPartial = true)
        val plan = Json.parse(input.readBytes()).obj()
        val records = plan["records"].arr()
        val scores = plan["scores"].arr().map { Py.toDouble(it) }
        val model = LocalModel(m.name, m.version, tar, m, RecordEncoder.forManifest(m.map), "a")
        val rows = Encoding.encodeRecords(m.fields, records)
        val nf = m.fields.size
        val dir = kotlin.io.path.createTempDirectory("outbox").toFile()
        val on = Telemetry(Outbox(File(dir, "on")), "dev-1", includeFeatures = true)
        val off = Telemetry(Outbox(File(dir, "off")), "dev-1", includeFeatures = false)
        records.forEachIndexed { i, r ->
            on.onPrediction(model, r.obj(), rows.copyOfRange(i * nf, (i + 1) * nf), scores[i], null)
            if (i == 0) off.onPrediction(model, r.obj(), rows.copyOfRange(0, nf), scores[0], null)
        }
        on.flushWindow()
        fun bodies(o: Outbox, kind: String) = o.pending().map { it.second }.filter { it["kind"] == kind }.map { it["body"] }
        out.writeText(Json.write(mapOf("sketch" to bodies(on.outbox, "sketch").single(), "with_features" to bodies(on.outbox, "prediction").first(),
            "without_features" to bodies(off.outbox, "prediction").single(), "ids" to on.outbox.pending().map { it.second["id"] }), allowNan = true))
        dir.deleteRecursively()
    }
}
