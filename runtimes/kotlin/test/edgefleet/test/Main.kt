// The Kotlin SDK's tests: `java -cp edgefleet-kotlin.jar:edgefleet-kotlin-tests.jar:kotlin-stdlib.jar
// edgefleet.test.MainKt GROUP ARGS...`. Each check prints PASS/FAIL; any failure exits 1, so
// the pytest wrappers in tests/kotlin (and through them `make test`) fail with it.
package edgefleet.test

import edgefleet.*
import java.io.File
import kotlin.system.exitProcess

class Failure(message: String) : Exception(message)

object T {
    var failed = 0
    var passed = 0
    fun test(name: String, body: () -> Unit) {
        try {
            body(); passed++; println("PASS $name")
        } catch (e: Throwable) {
            failed++; println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        }
    }
}

fun check(cond: Boolean, msg: () -> String) { if (!cond) throw Failure(msg()) }
fun eq(a: Any?, b: Any?, what: String = "value") = check(a == b) { "$what: expected ${Py.repr(b)}, got ${Py.repr(a)}" }

inline fun <reified E : Throwable> refuses(what: String, body: () -> Unit): E {
    try { body() } catch (e: Throwable) {
        if (e is E) return e
        throw Failure("$what: expected ${E::class.simpleName}, got ${e::class.simpleName}: ${e.message}")
    }
    throw Failure("$what: expected ${E::class.simpleName}, nothing was raised")
}

/** The JSON spelling of special floats ({"$float": "nan"}) back into Doubles, as tests/web/vectors.py's decode. */
fun decode(v: Any?): Any? = when {
    v is Map<*, *> && v.keys == setOf("\$float") -> when (v["\$float"]) { "nan" -> Double.NaN; "inf" -> Double.POSITIVE_INFINITY; else -> Double.NEGATIVE_INFINITY }
    v is Map<*, *> -> v.entries.associate { it.key as String to decode(it.value) }.let { LinkedHashMap(it) }
    v is List<*> -> v.map { decode(it) }
    else -> v
}

fun main(args: Array<String>) {
    when (args.firstOrNull()) {
        "vectors" -> VectorTests.run(File(args[1]))
        "verify-files" -> { args.drop(3).forEach { println(Json.write(mapOf("file" to it, "result" to verifyFile(File(it), File(args[1]).readText(), args[2] == "partial")))) }; return }
        "tamper" -> VerifyTests.run(File(args[1]), File(args[2]).readText(), File(args[3]))
        "store" -> StoreTests.run(Json.parse(File(args[1]).readBytes()).obj())
        "dump" -> { Dump.run(File(args[1]), File(args[2]).readText(), File(args[3]), File(args[4])); return }
        "e2e" -> E2E.run(args.drop(1))
        "sketch" -> { SketchDump.run(File(args[1]), File(args[2]).readText(), File(args[3]), File(args[4])); return }
        else -> { System.err.println("usage: MainKt vectors DIR | verify-file TAR PEM [partial] | tamper ... | store ... | dump ... | e2e ..."); exitProcess(2) }
    }
    println("${T.passed} passed, ${T.failed} failed")
    exitProcess(if (T.failed == 0) 0 else 1)
}

fun verifyFile(tar: File, pem: String, partial: Boolean): String = try {
    val b = BundleReader.open(tar)
    val m = BundleVerifier.verify(b, TrustedKeys.fromPems(listOf(pem)), allowPartial = partial)
    "OK ${m.name} ${m.version}"
} catch (e: EdgefleetException) {
    "ERROR ${e.message}"
}

object VectorTests {
    fun run(dir: File) {
        val vectors = Json.parse(File(dir, "churn.json").readBytes()).obj()
        val tflite = Json.parse(File(dir, "tflite.json").readBytes()).obj()["cases"].arr().associateBy { (it.obj()["case"] as Long).toInt() }
        @Suppress("UNCHECKED_CAST")
        val schemas = vectors["schemas"].obj().mapValues { it.value as List<Map<String, Any?>> }
        var packed = 0
        vectors["encoding"].arr().forEachIndexed { i, c ->
            val case = c.obj()
            T.test("vector $i: ${case["about"]}") {
                val fields = schemas[case["schema"]]!!
                val records = decode(case["records"]).arr()
                if ("error" in case) {
                    val want = case["error"].obj()
                    val e = refuses<InputError>("case $i") { Encoding.encodeRecords(fields, records) }
                    eq(e.field, want["field"], "field"); eq(e.reason, want["reason"], "reason"); eq(e.message, want["message"], "message")
                } else {
                    val got = Encoding.encodeRecords(fields, records)
                    val want = case["encoded"].arr().flatMap { it.arr() }
                    eq(got.size, want.size, "values")
                    want.forEachIndexed { k, w ->
                        val wb = if (w == null) java.lang.Double.doubleToRawLongBits(Double.NaN) else java.lang.Double.doubleToRawLongBits(Py.toDouble(w))
                        eq(java.lang.Double.doubleToRawLongBits(got[k]), wb, "value $k bits")
                    }
                    val pack = tflite[i]?.obj() ?: throw Failure("tflite.json has no packing for case $i")
                    val bits = (RecordEncoder(fields, "float64").encode(records) as TensorInput.Float64Bits).bits
                    val wantBits = pack["int64"].arr().flatMap { it.arr() }.map { it as Long }
                    eq(bits.toList(), wantBits, "int64 bits")
                    val f32 = (RecordEncoder(fields, "float32").encode(records) as TensorInput.Float32).values
                    val want32 = pack["float32"].arr().flatMap { it.arr() }
                    want32.forEachIndexed { k, w ->
                        val wb = if (w == null) java.lang.Float.floatToRawIntBits(Float.NaN) else java.lang.Float.floatToRawIntBits(Py.toDouble(w).toFloat())
                        eq(java.lang.Float.floatToRawIntBits(f32[k]), wb, "float32 value $k bits")
                    }
                    packed++
                }
            }
        }
        T.test("every packing case was checked") { eq(packed, tflite.size, "packing cases") }
        T.test("Python float repr") {
            for ((x, s) in listOf(1e-05 to "1e-05", 1.5e-07 to "1.5e-07", 123.25 to "123.25", 1e16 to "1e+16", 0.1 to "0.1", 52000.5 to "52000.5",
                    100.0 to "100.0", 1.0 / 3 to "0.3333333333333333", 2.0e-3 to "0.002", 1.7976931348623157e308 to "1.7976931348623157e+308",
                    5e-324 to "5e-324", 9007199254740993.0 to "9007199254740992.0", -0.0 to "-0.0", 1e22 to "1e+22", 123456789012345.6 to "123456789012345.6")) {
                eq(Py.floatRepr(x), s, "repr of $s")
            }
        }
    }
}
