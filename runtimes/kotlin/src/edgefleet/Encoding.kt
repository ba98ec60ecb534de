// Records -> the tensor a TFLite artifact takes: a line-by-line mirror of edgefleet/encoding.py
// (encode_records), including the order in which problems are found (structure row by row, then
// column by column) and the exact error text. tests/vectors/*.json pins Python, JS and Kotlin.
//
// Values are JSON values as Json.parse gives them: Kotlin keeps Python's int/float distinction
// (1 is a Long, 1.0 a Double), so the type named in an error is Python's.
package edgefleet

import java.math.BigInteger
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** A record does not match the input schema; [field] names the offending field. */
class InputError(val field: String, val reason: String) : EdgefleetException("field ${Py.strRepr(field)}: $reason")

private fun missing(v: Any?): Boolean = v == null || (v is Double && v.isNaN()) || (v is Float && v.isNaN())

private fun catKey(v: Any?): Any = when {
    v is Boolean -> "b" to v
    Py.isInt(v) || Py.isFloat(v) -> "n" to Py.toDouble(v)
    v is String -> "s" to v
    else -> "o" to Py.repr(v)
}

/** Python dict-key equality for the per-column cache: True == 1, 1 == 1.0 (floats are not cached). */
private fun cacheKey(v: Any?): Any? = when (v) {
    is Boolean -> if (v) 1L else 0L
    is Int -> v.toLong()
    is BigInteger -> if (v.bitLength() < 64) v.toLong() else v
    is List<*>, is Map<*, *> -> null  // unhashable in Python
    else -> v
}

internal fun encodeCategorical(field: Map<String, Any?>, values: List<Any?>, out: DoubleArray, j: Int, nf: Int) {
    val name = field["name"] as String
    val cats = (field["categories"] as? List<*>) ?: emptyList<Any?>()
    val index = HashMap<Any, Int>()
    cats.forEachIndexed { k, c -> if (c != null) index[catKey(c)] = k }
    val nanIdx = cats.indexOfFirst { it == null }.takeIf { it >= 0 }
    val policy = field["missing"] ?: "reject"
    val fill = field["fill"]
    val ignore = (field["unseen"] ?: "reject") == "ignore"
    val allStrings = cats.isNotEmpty() && cats.all { it == null || it is String }
    val missingCode = when {
        nanIdx != null -> nanIdx.toDouble()
        fill != null -> (index[catKey(fill)] ?: -1).toDouble()
        else -> -1.0
    }
    val seen = HashMap<Any, Double>()
    values.forEachIndexed { i, v ->
        val ck = if (Py.isFloat(v)) null else cacheKey(v)
        var code: Double? = if (ck != null) seen[ck] else null
        if (code == null) {
            if (missing(v)) {
                if (policy == "reject") throw InputError(name, "row $i: value is missing and the model has no rule for a missing $name")
                out[i * nf + j] = missingCode
                return@forEachIndexed
            }
            if (Py.isFloat(v) && Py.toDouble(v).isInfinite()) throw InputError(name, "row $i: value ${Py.str(v)} is not finite")
            if (allStrings && v !is String) {
                throw InputError(name, "row $i: expected a string category, got ${Py.typeName(v)} ${Py.repr(v)}")
            }
            var k = index[catKey(v)]
            if (k == null) {
                if (!ignore) {
                    val shown = cats.take(8).joinToString(", ") { Py.repr(it) } + (if (cats.size > 8) " ..." else "")
                    throw InputError(name, "row $i: unseen category ${Py.repr(v)} (known: $shown)")
                }
                k = -1
            }
            code = k.toDouble()
            if (ck != null) seen[ck] = code
        }
        out[i * nf + j] = code
    }
}

internal fun encodeNumeric(field: Map<String, Any?>, values: List<Any?>, out: DoubleArray, j: Int, nf: Int) {
    val name = field["name"] as String
    val boolean = field["type"] == "boolean"
    val impute = (field["missing"] ?: "reject") == "impute"
    values.forEachIndexed { i, v ->
        if (missing(v)) {
            if (!impute) throw InputError(name, "row $i: value is missing and the model does not impute $name")
            out[i * nf + j] = Double.NaN
            return@forEachIndexed
        }
        if (boolean) {
            if (v is Boolean || (Py.isInt(v) && (Py.toDouble(v) == 0.0 || Py.toDouble(v) == 1.0))) {
                out[i * nf + j] = if (Py.toDouble(v) != 0.0) 1.0 else 0.0
                return@forEachIndexed
            }
            if (v is String && (v.lowercase() == "true" || v.lowercase() == "false")) {
                out[i * nf + j] = if (v.lowercase() == "true") 1.0 else 0.0
                return@forEachIndexed
            }
            throw InputError(name, "row $i: expected a boolean, got ${Py.typeName(v)} ${Py.repr(v)}")
        }
        if (v is Boolean || !(Py.isInt(v) || Py.isFloat(v))) {
            throw InputError(name, "row $i: expected a number, got ${Py.typeName(v)} ${Py.repr(v)}")
        }
        val f = Py.toDouble(v)
        if (f.isNaN() || f.isInfinite()) throw InputError(name, "row $i: value ${Py.str(v)} is not finite")
        out[i * nf + j] = f
    }
}

object Encoding {
    /** encode_records: every field present, no unexpected field, valid values; row-major [n * F] doubles. */
    fun encodeRecords(fields: List<Map<String, Any?>>, records: List<Any?>): DoubleArray {
        val names = fields.map { it["name"] as String }
        val known = names.toHashSet()
        records.forEachIndexed { i, rec ->
            if (rec !is Map<*, *>) throw InputError("<record>", "row $i: expected an object of field values, got ${Py.typeName(rec)}")
            for (n in names) if (!rec.containsKey(n)) throw InputError(n, "row $i: missing field")
            for (k in rec.keys) if (k !in known) throw InputError(k.toString(), "row $i: unexpected field (the model takes: ${names.joinToString(", ")})")
        }
        val nf = fields.size
        val out = DoubleArray(records.size * nf)
        fields.forEachIndexed { j, f ->
            val col = records.map { (it as Map<*, *>)[f["name"]] }
            if (f["type"] == "categorical") encodeCategorical(f, col, out, j, nf) else encodeNumeric(f, col, out, j, nf)
        }
        return out
    }
}

/** The input tensor of a TFLite artifact, in the dtype its manifest entry names. */
sealed class TensorInput(val rows: Int, val cols: Int) {
    /** float64 [N, F] carried as the doubles' IEEE-754 bit patterns (TFLite bit-casts them to int64 keys). */
    class Float64Bits(rows: Int, cols: Int, val bits: LongArray) : TensorInput(rows, cols) {
        override fun toByteBuffer(): ByteBuffer {
            val b = ByteBuffer.allocateDirect(bits.size * 8).order(ByteOrder.nativeOrder())
            b.asLongBuffer().put(bits)
            return b
        }
        fun doubles(): DoubleArray = DoubleArray(bits.size) { java.lang.Double.longBitsToDouble(bits[it]) }
    }

    /** float32 [N, F]: the Keras artifacts' own dtype. */
    class Float32(rows: Int, cols: Int, val values: FloatArray) : TensorInput(rows, cols) {
        override fun toByteBuffer(): ByteBuffer {
            val b = ByteBuffer.allocateDirect(values.size * 4).order(ByteOrder.nativeOrder())
            b.asFloatBuffer().put(values)
            return b
        }
    }

    val dtype: String get() = if (this is Float64Bits) "float64" else "float32"

    /** Direct buffer in native byte order, as LiteRT's Interpreter.run / runForMultipleInputsOutputs take it. */
    abstract fun toByteBuffer(): ByteBuffer
}

/**
 * The typed encoder of one verified manifest: records in, the TFLite artifact's input out. The
 * manifest's artifact entry says which dtype the artifact takes; callers never choose.
 */
class RecordEncoder(val fields: List<Map<String, Any?>>, val dtype: String = "float64") {
    init {
        require(dtype == "float64" || dtype == "float32") { "unsupported input dtype $dtype" }
    }

    val names: List<String> = fields.map { it["name"] as String }

    fun encode(records: List<Any?>): TensorInput {
        val d = Encoding.encodeRecords(fields, records)
        val n = records.size
        return if (dtype == "float64") {
            TensorInput.Float64Bits(n, fields.size, LongArray(d.size) { java.lang.Double.doubleToRawLongBits(d[it]) })
        } else {
            TensorInput.Float32(n, fields.size, FloatArray(d.size) { d[it].toFloat() })
        }
    }

    fun encodeOne(record: Map<String, Any?>): TensorInput = encode(listOf(record))

    companion object {
        /** The encoder for [manifest]'s artifact of [format] (default tflite). */
        fun forManifest(manifest: Map<String, Any?>, format: String = "tflite"): RecordEncoder {
            @Suppress("UNCHECKED_CAST")
            val fields = manifest["input_schema"].obj()["fields"].arr() as List<Map<String, Any?>>
            val art = manifest["artifacts"].arr().map { it.obj() }.firstOrNull { it["format"] == format }
                ?: throw BundleError("the manifest has no $format artifact")
            val dtype = art["inputs"].arr().first().obj()["dtype"] as String
            return RecordEncoder(fields, dtype)
        }
    }
}
