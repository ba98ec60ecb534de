// Python's repr() and type names, as edgefleet/encoding.py's messages show them.
package edgefleet

import java.math.BigDecimal
import java.math.BigInteger
import java.math.MathContext
import java.math.RoundingMode

open class EdgefleetException(message: String) : Exception(message)

object Py {
    /** Python's repr(float): the shortest digits that round-trip, scientific below 1e-4 and from 1e16. */
    fun floatRepr(x: Double): String {
        if (x.isNaN()) return "nan"
        if (x == Double.POSITIVE_INFINITY) return "inf"
        if (x == Double.NEGATIVE_INFINITY) return "-inf"
        if (x == 0.0) return if (1.0 / x < 0) "-0.0" else "0.0"
        val exact = BigDecimal(x)
        var rounded = exact
        for (p in 1..17) {
            rounded = exact.round(MathContext(p, RoundingMode.HALF_EVEN))
            if (rounded.toDouble() == x) break
        }
        val neg = rounded.signum() < 0
        val unscaled = rounded.unscaledValue().abs().toString().trimEnd('0').ifEmpty { "0" }
        // value = 0.d1d2... * 10^(exp+1) with exp the decimal exponent of the first digit
        val exp = rounded.precision() - rounded.scale() - 1
        val digits = unscaled
        val body = when {
            exp < -4 || exp >= 16 -> {
                val m = if (digits.length > 1) "${digits[0]}.${digits.substring(1)}" else digits
                m + "e" + (if (exp < 0) "-" else "+") + Math.abs(exp).toString().padStart(2, '0')
            }
            exp < 0 -> "0." + "0".repeat(-exp - 1) + digits
            digits.length <= exp + 1 -> digits + "0".repeat(exp + 1 - digits.length) + ".0"
            else -> digits.substring(0, exp + 1) + "." + digits.substring(exp + 1)
        }
        return (if (neg) "-" else "") + body
    }

    fun strRepr(s: String): String {
        val q = if (s.contains('\'') && !s.contains('"')) '"' else '\''
        val sb = StringBuilder().append(q)
        for (ch in s) {
            val c = ch.code
            when {
                ch == '\\' -> sb.append("\\\\")
                ch == q -> sb.append('\\').append(q)
                ch == '\n' -> sb.append("\\n")
                ch == '\r' -> sb.append("\\r")
                ch == '\t' -> sb.append("\\t")
                c < 0x20 || c in 0x7f..0xa0 || c == 0xad -> sb.append("\\x").append(String.format("%02x", c))
                else -> sb.append(ch)
            }
        }
        return sb.append(q).toString()
    }

    fun isInt(v: Any?): Boolean = v is Long || v is Int || v is Short || v is Byte || v is BigInteger
    fun isFloat(v: Any?): Boolean = v is Double || v is Float

    fun repr(v: Any?): String = when (v) {
        null -> "None"
        is Boolean -> if (v) "True" else "False"
        is String -> strRepr(v)
        is Double, is Float -> floatRepr((v as Number).toDouble())
        is Map<*, *> -> v.entries.joinToString(", ", "{", "}") { "${repr(it.key)}: ${repr(it.value)}" }
        is List<*> -> v.joinToString(", ", "[", "]") { repr(it) }
        else -> if (isInt(v)) v.toString() else v.toString()
    }

    /** Python's str(): repr for everything but strings. */
    fun str(v: Any?): String = if (v is String) v else repr(v)

    fun typeName(v: Any?): String = when {
        v == null -> "NoneType"
        v is Boolean -> "bool"
        isInt(v) -> "int"
        isFloat(v) -> "float"
        v is String -> "str"
        v is List<*> -> "list"
        v is Map<*, *> -> "dict"
        else -> v::class.simpleName ?: "object"
    }

    fun toDouble(v: Any?): Double = when (v) {
        is BigInteger -> v.toDouble()
        is Number -> v.toDouble()
        is Boolean -> if (v) 1.0 else 0.0
        else -> throw IllegalArgumentException("not a number")
    }
}
