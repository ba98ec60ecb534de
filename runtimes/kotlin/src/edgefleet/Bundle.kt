// Bundle format v1 on the device: read a .tar without trusting it, then verify it exactly as
// edgefleet/bundle_format.py does: (1) Ed25519 over manifest.json's exact bytes with a trusted
// publisher key chosen by key id, (2) format and schema, (3) every artifact's size then sha256,
// (4) no file the signed manifest does not list. JDK 15+ (and Android API 33+) have Ed25519.
package edgefleet

import java.io.File
import java.security.KeyFactory
import java.security.MessageDigest
import java.security.PublicKey
import java.security.Signature
import java.security.spec.X509EncodedKeySpec
import java.util.Base64

object Keys {
    private val SPKI_PREFIX = byteArrayOf(0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00)

    /** An Ed25519 public key from PEM (SubjectPublicKeyInfo), as `edgefleet keys generate` writes it. */
    fun publicKeyFromPem(pem: String): PublicKey {
        val body = pem.lines().filter { it.isNotBlank() && !it.startsWith("-----") }.joinToString("")
        val der = try { Base64.getDecoder().decode(body) } catch (e: IllegalArgumentException) {
            throw EdgefleetException("public key: not a PEM key (${e.message})")
        }
        if (der.size != 44 || !der.copyOfRange(0, 12).contentEquals(SPKI_PREFIX)) throw EdgefleetException("public key: not an Ed25519 key")
        return KeyFactory.getInstance("Ed25519").generatePublic(X509EncodedKeySpec(der))
    }

    fun raw(key: PublicKey): ByteArray = key.encoded.copyOfRange(12, 44)

    /** The first 16 hex digits of sha256(raw key), as edgefleet.keys.key_id. */
    fun keyId(key: PublicKey): String = hex(sha256(raw(key))).substring(0, 16)

    fun verify(key: PublicKey, signature: ByteArray, data: ByteArray): Boolean {
        val s = Signature.getInstance("Ed25519")
        s.initVerify(key)
        s.update(data)
        return try { s.verify(signature) } catch (e: java.security.SignatureException) { false }
    }
}

fun sha256(data: ByteArray): ByteArray = MessageDigest.getInstance("SHA-256").digest(data)
fun hex(b: ByteArray): String = b.joinToString("") { String.format("%02x", it) }

/** A trusted key set, looked up by key id. */
class TrustedKeys(keys: Collection<PublicKey>) {
    val byId: Map<String, PublicKey> = keys.associateBy { Keys.keyId(it) }

    companion object {
        fun fromPems(pems: Collection<String>) = TrustedKeys(pems.map { Keys.publicKeyFromPem(it) })
    }
}

/** A bundle's bytes as read; nothing here is trusted before [BundleVerifier.verify]. */
class Bundle(val source: String, val manifestBytes: ByteArray, val signature: ByteArray, val files: Map<String, ByteArray>)

/** The manifest after verification: the only way to get one is [BundleVerifier.verify]. */
class VerifiedManifest internal constructor(val map: Map<String, Any?>, val bytes: ByteArray) {
    val name: String get() = map["name"] as String
    val version: Long get() = (map["version"] as Number).toLong()
    val keyId: String get() = map["key_id"] as String
    @Suppress("UNCHECKED_CAST")
    val fields: List<Map<String, Any?>> get() = map["input_schema"].obj()["fields"].arr() as List<Map<String, Any?>>
    fun artifact(format: String): Map<String, Any?>? = map["artifacts"].arr().map { it.obj() }.firstOrNull { it["format"] == format }
}

object BundleReader {
    const val MANIFEST = "manifest.json"
    const val SIGNATURE = "signature"
    const val MAX_MEMBER_BYTES = 512L * 1024 * 1024
    const val MAX_TOTAL_BYTES = 1024L * 1024 * 1024
    const val MAX_MANIFEST_BYTES = 16L * 1024 * 1024
    const val MAX_SIGNATURE_BYTES = 4096L
    const val MAX_MEMBERS = 256
    private val ARTIFACT_PATH = Regex("artifacts/[A-Za-z0-9._-]+")

    private fun memberName(name: String, source: String): String {
        val parts = name.split('/').filter { it.isNotEmpty() && it != "." }
        if (name.startsWith("/") || ".." in parts || parts.isEmpty()) throw BundleError("$source: unsafe path ${Py.strRepr(name)} in bundle")
        return parts.joinToString("/")
    }

    private fun octal(h: ByteArray, off: Int, len: Int, source: String): Long {
        if (h[off].toInt() and 0x80 != 0) {  // base-256 (GNU) size
            var v = 0L
            for (k in off + 1 until off + len) v = (v shl 8) or (h[k].toLong() and 0xff)
            return v
        }
        val s = String(h, off, len, Charsets.US_ASCII).trim { it == ' ' || it == '\u0000' }
        if (s.isEmpty()) return 0
        return s.toLongOrNull(8) ?: throw BundleError("$source is truncated or not a tar (not a readable bundle archive: invalid header)")
    }

    private fun cstr(h: ByteArray, off: Int, len: Int): String {
        var end = off
        while (end < off + len && h[end].toInt() != 0) end++
        return String(h, off, end - off, Charsets.UTF_8)
    }

    /** Read a bundle .tar: headers first (types, names, caps, duplicates), then only listed files. */
    fun open(file: File, maxTotalBytes: Long = MAX_TOTAL_BYTES, sourceName: String? = null): Bundle {
        val source = sourceName ?: file.path
        if (!file.exists()) throw BundleError("$source: no such bundle (expected a bundle folder or .tar archive)")
        val data = file.readBytes()
        val cap = minOf(maxTotalBytes, MAX_TOTAL_BYTES)
        class Member(val name: String, val offset: Int, val size: Int)
        val members = LinkedHashMap<String, Member>()
        val folded = HashMap<String, String>()
        val dirs = ArrayList<String>()
        var total = 0L
        var pos = 0
        var ended = false
        var count = 0
        while (pos + 512 <= data.size) {
            val h = data.copyOfRange(pos, pos + 512)
            if (h.all { it.toInt() == 0 }) { ended = true; break }
            if (++count > MAX_MEMBERS * 2) throw BundleError("$source: more than ${MAX_MEMBERS * 2} archive entries; this is not a bundle")
            val sum = octal(h, 148, 8, source)
            var calc = 0L
            for (k in 0 until 512) calc += if (k in 148 until 156) 32 else (h[k].toLong() and 0xff)
            if (sum != calc) throw BundleError("$source is truncated or not a tar (not a readable bundle archive: bad checksum)")
            val prefix = if (String(h, 257, 5, Charsets.US_ASCII) == "ustar") cstr(h, 345, 155) else ""
            val rawName = (if (prefix.isNotEmpty()) "$prefix/" else "") + cstr(h, 0, 100)
            val size = octal(h, 124, 12, source)
            val type = h[156].toInt().toChar()
            val dataAt = pos + 512
            when {
                type == '5' -> {
                    val parts = rawName.split('/').filter { it.isNotEmpty() && it != "." }
                    if (parts.isNotEmpty()) dirs.add(memberName(rawName, source))
                }
                type == '0' || type == '\u0000' -> {
                    if (dataAt + size > data.size) throw BundleError("$source is truncated: member $rawName claims $size bytes, more than the archive holds")
                    val name = memberName(rawName, source)
                    val f = name.lowercase()
                    folded[f]?.let { throw BundleError("$source: ${Py.strRepr(rawName)} appears twice in the bundle (as ${Py.strRepr(it)}); duplicates are refused") }
                    if (folded.size >= MAX_MEMBERS) throw BundleError("$source: more than $MAX_MEMBERS files; this is not a bundle")
                    val limit = when (name) { MANIFEST -> MAX_MANIFEST_BYTES; SIGNATURE -> MAX_SIGNATURE_BYTES; else -> MAX_MEMBER_BYTES }
                    if (size < 0 || size > limit) throw BundleError("$source: member $name is $size bytes, over the limit of $limit")
                    total += size
                    if (total > cap) throw BundleError("$source: the files add up to more than $cap bytes; refused unread")
                    folded[f] = name
                    members[name] = Member(name, dataAt, size.toInt())
                }
                type == 'S' || type == 'x' || type == 'g' -> throw BundleError("$source: sparse member ${Py.strRepr(rawName)}; bundle archives may hold only plain files")
                else -> throw BundleError("$source: bundle archives may hold only files ($rawName)")
            }
            pos = dataAt + (((if (type == '5') 0L else size) + 511) / 512 * 512).toInt()
        }
        if (!ended || pos + 512 > data.size) {
            throw BundleError("$source is truncated or not a tar: it ends at byte ${data.size} without the tar end-of-archive marker (an interrupted download or copy?)")
        }
        fun bytes(m: Member) = data.copyOfRange(m.offset, m.offset + m.size)
        val manifest = members[MANIFEST]?.let { bytes(it) } ?: throw BundleError("$source: manifest.json is missing; this is not an edgefleet bundle")
        val listed = listedPaths(manifest, source)
        val unlisted = members.keys.filter { it != MANIFEST && it != SIGNATURE && it !in listed }.sorted()
        if (unlisted.isNotEmpty()) throw VerificationError("$source: files not listed in the signed manifest: ${unlisted.joinToString(", ")}")
        val parents = listed.flatMap { p -> p.split('/').let { parts -> (1 until parts.size).map { parts.subList(0, it).joinToString("/") } } }.toSet()
        for (d in dirs) if (d !in parents) throw VerificationError("$source: folder ${Py.strRepr(d)} holds no file the signed manifest lists")
        val sigText = members[SIGNATURE]?.let { bytes(it) } ?: throw BundleError("$source: the signature file is missing; an unsigned bundle cannot be trusted")
        val signature = try {
            Base64.getDecoder().decode(String(sigText, Charsets.US_ASCII).trim())
        } catch (e: IllegalArgumentException) {
            throw VerificationError("$source: the signature file is not base64: ${e.message}")
        }
        return Bundle(source, manifest, signature, members.mapValues { bytes(it.value) })
    }

    internal fun parseManifest(bytes: ByteArray, source: String): Map<String, Any?> {
        val parsed = try { Json.parse(bytes) } catch (e: JsonError) {
            throw BundleError("$source: manifest.json is not valid JSON: ${e.message}")
        }
        return parsed as? Map<String, Any?> ?: throw BundleError("$source: manifest.json must hold a JSON object")
    }

    private fun listedPaths(manifest: ByteArray, source: String): Set<String> {
        val arts = parseManifest(manifest, source)["artifacts"] as? List<*>
            ?: throw BundleError("$source: malformed manifest: artifacts: must be an array of entries, each with a path")
        return arts.mapIndexed { i, a ->
            val p = (a as? Map<*, *>)?.get("path")
            if (p !is String || !ARTIFACT_PATH.matches(p)) {
                throw BundleError("$source: malformed manifest: artifacts[$i].path: must be artifacts/<name> (letters, digits, . _ -), got ${short(p)}")
            }
            p
        }.toSet()
    }

    internal fun short(v: Any?): String { val t = Py.repr(v); return if (t.length <= 60) t else t.substring(0, 57) + "..." }
}

object BundleVerifier {
    const val FORMAT_NAME = "edgefleet.bundle"
    const val FORMAT_VERSION = 1L

    /**
     * Verify [bundle] against the trusted publisher keys (chosen by the manifest's key id) and
     * return the now-trusted manifest. [allowPartial] accepts a slim bundle (the server sends a
     * device only the format it runs): every artifact present is still checked.
     */
    fun verify(bundle: Bundle, trusted: TrustedKeys, allowPartial: Boolean = false): VerifiedManifest {
        val claimed = try { (Json.parse(bundle.manifestBytes) as? Map<*, *>)?.get("key_id") as? String } catch (e: JsonError) { null }
        val key = claimed?.let { trusted.byId[it] }
        if (key == null) {
            val known = trusted.byId.keys.sorted().joinToString(", ")
            throw VerificationError("${bundle.source}: the manifest names key ${claimed ?: "<none>"}, which is not a trusted publisher key (trusted: $known)")
        }
        if (!Keys.verify(key, bundle.signature, bundle.manifestBytes)) {
            throw VerificationError("${bundle.source}: signature does not match the manifest for public key ${Keys.keyId(key)}: " +
                "the manifest was changed after signing, or it was signed by another key")
        }
        val manifest = BundleReader.parseManifest(bundle.manifestBytes, bundle.source)
        if (manifest["format"] != FORMAT_NAME || !ManifestSchema.same(manifest["format_version"], FORMAT_VERSION)) {
            throw BundleError("${bundle.source}: unsupported bundle format ${BundleReader.short(manifest["format"])} " +
                "version ${BundleReader.short(manifest["format_version"])}; this edgefleet reads $FORMAT_NAME v$FORMAT_VERSION")
        }
        try {
            ManifestSchema.check(manifest)
        } catch (e: ManifestError) {
            throw BundleError("${bundle.source}: malformed manifest: ${e.message}")
        }
        val listed = HashSet<String>()
        var present = 0
        for (a in manifest["artifacts"].arr()) {
            val art = a.obj()
            val rel = art["path"] as String
            listed.add(rel)
            val data = bundle.files[rel]
            if (data == null) {
                if (allowPartial) continue
                throw BundleError("${bundle.source}: artifact $rel is missing from the bundle")
            }
            present++
            if (!ManifestSchema.same(data.size.toLong(), art["size"])) {
                throw VerificationError("${bundle.source}: artifact $rel (${art["format"]}) has ${data.size} bytes, the signed manifest says ${Py.str(art["size"])}")
            }
            val digest = hex(sha256(data))
            if (digest != art["sha256"]) {
                throw VerificationError("${bundle.source}: artifact $rel (${art["format"]}) sha256 is $digest, " +
                    "the signed manifest says ${art["sha256"]}: the file was changed or corrupted")
            }
        }
        if (present == 0) throw BundleError("${bundle.source}: the bundle carries none of the artifacts its manifest lists")
        val extra = bundle.files.keys.filter { it !in listed && it != BundleReader.MANIFEST && it != BundleReader.SIGNATURE }.sorted()
        if (extra.isNotEmpty()) throw VerificationError("${bundle.source}: files not listed in the signed manifest: ${extra.joinToString(", ")}")
        return VerifiedManifest(manifest, bundle.manifestBytes)
    }

    fun verifyFile(file: File, trusted: TrustedKeys, allowPartial: Boolean = true): Pair<Bundle, VerifiedManifest> {
        val b = BundleReader.open(file)
        return b to verify(b, trusted, allowPartial)
    }
}
