// JSON as Python's json module sees it: an integer literal is an integer (Long, or BigInteger
// past 64 bits), anything with a fraction or exponent is a Double, objects keep their key order.
// Values are plain Kotlin: null, Boolean, Long, BigInteger, Double, String, List<Any?>, Map<String, Any?>.
package edgefleet

import java.math.BigInteger

class JsonError(message: String) : EdgefleetException(message)

object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        p.ws()
        val v = p.value(0)
        p.ws()
        if (p.i != text.length) throw JsonError("extra data at character ${p.i}")
        return v
    }

    fun parse(bytes: ByteArray): Any? = parse(Utf8.decode(bytes))

    /** Python's json.dumps(obj, sort_keys=[sortKeys], separators=(",", ":"), ensure_ascii=[ascii], allow_nan=False). */
    fun write(value: Any?, sortKeys: Boolean = false, ascii: Boolean = false, allowNan: Boolean = false): String {
        val sb = StringBuilder()
        emit(sb, value, sortKeys, ascii, allowNan)
        return sb.toString()
    }

    /** The one byte form edgefleet signs: sorted keys, no whitespace, UTF-8, no NaN. */
    fun canonical(value: Any?): ByteArray = write(value, sortKeys = true).toByteArray(Charsets.UTF_8)

    private fun emit(sb: StringBuilder, v: Any?, sort: Boolean, ascii: Boolean, allowNan: Boolean) {
        when (v) {
            null -> sb.append("null")
            is Boolean -> sb.append(if (v) "true" else "false")
            is Long, is Int, is Short, is Byte, is BigInteger -> sb.append(v.toString())
            is Double, is Float -> {
                val d = (v as Number).toDouble()
                if (d.isNaN() || d.isInfinite()) {
                    if (!allowNan) throw JsonError("Out of range float values are not JSON compliant: ${Py.floatRepr(d)}")
                    sb.append(if (d.isNaN()) "NaN" else if (d > 0) "Infinity" else "-Infinity")
                } else sb.append(Py.floatRepr(d))
            }
            is String -> string(sb, v, ascii)
            is Map<*, *> -> {
                sb.append('{')
                val keys = v.keys.map { it as String }.let { if (sort) it.sorted() else it }
                keys.forEachIndexed { n, k ->
                    if (n > 0) sb.append(',')
                    string(sb, k, ascii); sb.append(':'); emit(sb, v[k], sort, ascii, allowNan)
                }
                sb.append('}')
            }
            is List<*> -> {
                sb.append('[')
                v.forEachIndexed { n, x -> if (n > 0) sb.append(','); emit(sb, x, sort, ascii, allowNan) }
                sb.append(']')
            }
            else -> throw JsonError("Object of type ${v::class.simpleName} is not JSON serializable")
        }
    }

    fun string(sb: StringBuilder, s: String, ascii: Boolean) {
        sb.append('"')
        for (ch in s) {
            when {
                ch == '"' -> sb.append("\\\"")
                ch == '\\' -> sb.append("\\\\")
                ch == '\n' -> sb.append("\\n")
                ch == '\r' -> sb.append("\\r")
                ch == '\t' -> sb.append("\\t")
                ch == '\b' -> sb.append("\\b")
                ch == '\u000c' -> sb.append("\\f")
                ch.code < 0x20 || (ascii && ch.code > 0x7e) -> sb.append("\\u").append(String.format("%04x", ch.code))
                else -> sb.append(ch)
            }
        }
        sb.append('"')
    }

    private class Parser(val s: String) {
        var i = 0
        fun ws() { while (i < s.length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++ }
        fun fail(what: String): Nothing = throw JsonError("$what at character $i")
        fun value(depth: Int): Any? {
            if (depth > 512) fail("nested too deeply")
            if (i >= s.length) fail("expecting value")
            return when (val c = s[i]) {
                '{' -> obj(depth)
                '[' -> arr(depth)
                '"' -> str()
                't' -> lit("true", true)
                'f' -> lit("false", false)
                'n' -> lit("null", null)
                'N' -> lit("NaN", Double.NaN)
                'I' -> lit("Infinity", Double.POSITIVE_INFINITY)
                else -> if (c == '-' || c in '0'..'9') num() else fail("expecting value")
            }
        }
        fun lit(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) fail("expecting value")
            i += word.length
            return v
        }
        fun obj(depth: Int): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++; ws()
            if (i < s.length && s[i] == '}') { i++; return out }
            while (true) {
                ws()
                if (i >= s.length || s[i] != '"') fail("expecting property name enclosed in double quotes")
                val k = str()
                ws()
                if (i >= s.length || s[i] != ':') fail("expecting ':' delimiter")
                i++; ws()
                out[k] = value(depth + 1)
                ws()
                if (i < s.length && s[i] == ',') { i++; continue }
                if (i < s.length && s[i] == '}') { i++; return out }
                fail("expecting ',' delimiter")
            }
        }
        fun arr(depth: Int): List<Any?> {
            val out = ArrayList<Any?>()
            i++; ws()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                ws()
                out.add(value(depth + 1))
                ws()
                if (i < s.length && s[i] == ',') { i++; continue }
                if (i < s.length && s[i] == ']') { i++; return out }
                fail("expecting ',' delimiter")
            }
        }
        fun str(): String {
            val sb = StringBuilder()
            i++
            while (true) {
                if (i >= s.length) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> {
                        if (i >= s.length) fail("unterminated string")
                        when (val e = s[i++]) {
                            '"' -> sb.append('"'); '\\' -> sb.append('\\'); '/' -> sb.append('/')
                            'b' -> sb.append('\b'); 'f' -> sb.append('\u000c'); 'n' -> sb.append('\n')
                            'r' -> sb.append('\r'); 't' -> sb.append('\t')
                            'u' -> {
                                if (i + 4 > s.length) fail("invalid \\uXXXX escape")
                                sb.append(s.substring(i, i + 4).toIntOrNull(16)?.toChar() ?: fail("invalid \\uXXXX escape"))
                                i += 4
                            }
                            else -> fail("invalid \\escape ${e}")
                        }
                    }
                    c.code < 0x20 -> fail("invalid control character")
                    else -> sb.append(c)
                }
            }
        }
        fun num(): Any {
            val start = i
            if (s[i] == '-') i++
            if (i < s.length && s[i] == 'I') { lit("Infinity", null); return Double.NEGATIVE_INFINITY }
            if (i >= s.length || s[i] !in '0'..'9') fail("expecting value")
            if (s[i] == '0') i++ else while (i < s.length && s[i] in '0'..'9') i++
            var isFloat = false
            if (i < s.length && s[i] == '.' && i + 1 < s.length && s[i + 1] in '0'..'9') {
                isFloat = true; i++
                while (i < s.length && s[i] in '0'..'9') i++
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                var j = i + 1
                if (j < s.length && (s[j] == '+' || s[j] == '-')) j++
                if (j < s.length && s[j] in '0'..'9') {
                    isFloat = true; i = j
                    while (i < s.length && s[i] in '0'..'9') i++
                }
            }
            val t = s.substring(start, i)
            if (isFloat) return t.toDouble()
            return t.toLongOrNull() ?: BigInteger(t)
        }
    }
}

object Utf8 {
    fun decode(bytes: ByteArray): String {
        val dec = Charsets.UTF_8.newDecoder()
        try {
            return dec.decode(java.nio.ByteBuffer.wrap(bytes)).toString()
        } catch (e: java.nio.charset.CharacterCodingException) {
            throw JsonError("not valid UTF-8: ${e.message}")
        }
    }
}

/** Typed views of parsed JSON. */
@Suppress("UNCHECKED_CAST")
fun Any?.obj(): Map<String, Any?> = this as? Map<String, Any?> ?: throw JsonError("expected a JSON object")
@Suppress("UNCHECKED_CAST")
fun Any?.arr(): List<Any?> = this as? List<Any?> ?: throw JsonError("expected a JSON array")
