package edgefleet.test

import edgefleet.*
import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader

/** The tests' Scorer: ai-edge-litert's real Interpreter in a Python worker (tests/kotlin/litert_worker.py). */
class LiteRtWorkerScorer(python: String, worker: String) : Scorer, AutoCloseable {
    private val proc = ProcessBuilder(python, worker).redirectError(ProcessBuilder.Redirect.INHERIT).start()
    private val out = proc.outputStream.bufferedWriter()
    private val input = BufferedReader(InputStreamReader(proc.inputStream))
    var calls = 0
        private set

    @Synchronized
    override fun predict(model: File, input: TensorInput): Array<DoubleArray> {
        calls++
        val tmp = File.createTempFile("tensor", ".bin")
        try {
            val buf = input.toByteBuffer()
            val bytes = ByteArray(buf.remaining()); buf.get(bytes)
            tmp.writeBytes(bytes)
            out.write(Json.write(mapOf("model" to model.path, "input" to tmp.path, "dtype" to input.dtype, "rows" to input.rows, "cols" to input.cols)))
            out.newLine(); out.flush()
            val reply = Json.parse(this.input.readLine() ?: throw IllegalStateException("the LiteRT worker exited")).obj()
            reply["error"]?.let { throw IllegalStateException("LiteRT: $it") }
            return reply["probabilities"].arr().map { r -> r.arr().map { Py.toDouble(it) }.toDoubleArray() }.toTypedArray()
        } finally {
            tmp.delete()
        }
    }

    override fun close() { out.close(); proc.waitFor() }
}

/** Tar members of a USTAR archive: name -> (data offset, size), for byte-level tampering. */
fun tarMembers(data: ByteArray): Map<String, Pair<Int, Int>> {
    val out = LinkedHashMap<String, Pair<Int, Int>>()
    var pos = 0
    while (pos + 512 <= data.size && data.copyOfRange(pos, pos + 512).any { it.toInt() != 0 }) {
        var end = pos; while (end < pos + 100 && data[end].toInt() != 0) end++
        val name = String(data, pos, end - pos)
        val size = String(data, pos + 124, 12).trim { it == ' ' || it == '\u0000' }.toLong(8).toInt()
        out[name] = (pos + 512) to size
        pos += 512 + (size + 511) / 512 * 512
    }
    return out
}

/** A USTAR archive of [files] (sorted names, zero times), as edgefleet.bundle_format.pack writes. */
fun packTar(files: Map<String, ByteArray>): ByteArray {
    val bos = java.io.ByteArrayOutputStream()
    for (name in files.keys.sorted()) {
        val data = files[name]!!
        val h = ByteArray(512)
        name.toByteArray().copyInto(h, 0)
        fun put(off: Int, len: Int, v: Long) { String.format("%0${len - 1}o", v).toByteArray().copyInto(h, off) }
        put(100, 8, 0b110100100); put(108, 8, 0); put(116, 8, 0); put(124, 12, data.size.toLong()); put(136, 12, 0)
        h[156] = '0'.code.toByte()
        "ustar\u000000".toByteArray().copyInto(h, 257)
        for (k in 148 until 156) h[k] = ' '.code.toByte()
        val sum = h.sumOf { it.toLong() and 0xff }
        String.format("%06o\u0000 ", sum).toByteArray().copyInto(h, 148)
        bos.write(h); bos.write(data); bos.write(ByteArray((512 - data.size % 512) % 512))
    }
    bos.write(ByteArray(1024))
    return bos.toByteArray()
}

fun filesOf(tar: File): Map<String, ByteArray> {
    val d = tar.readBytes()
    return tarMembers(d).mapValues { (_, v) -> d.copyOfRange(v.first, v.first + v.second) }
}

fun ed25519Pair(): java.security.KeyPair = java.security.KeyPairGenerator.getInstance("Ed25519").generateKeyPair()

fun sign(priv: java.security.PrivateKey, data: ByteArray): ByteArray =
    java.security.Signature.getInstance("Ed25519").run { initSign(priv); update(data); sign() }
