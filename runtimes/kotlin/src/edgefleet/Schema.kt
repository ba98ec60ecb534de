// The manifest schema check of edgefleet/manifest_schema.py, ported rule for rule: the same
// subset of JSON Schema, interpreting the same schema file (shipped inside the jar), and the
// same first-violation message ("artifacts[0].format: is required").
package edgefleet

import java.util.regex.Pattern

open class BundleError(message: String) : EdgefleetException(message)
class VerificationError(message: String) : BundleError(message)
class ManifestError(val field: String, val reason: String) : BundleError("$field: $reason")

object ManifestSchema {
    const val MAX_DEPTH = 64

    val schema: Map<String, Any?> by lazy {
        val stream = ManifestSchema::class.java.getResourceAsStream("/edgefleet/manifest.schema.json")
            ?: throw IllegalStateException("manifest.schema.json is missing from the edgefleet jar")
        Json.parse(stream.use { it.readBytes() }).obj()
    }

    private fun isType(v: Any?, name: String): Boolean = when (name) {
        "object" -> v is Map<*, *>
        "array" -> v is List<*>
        "string" -> v is String
        "boolean" -> v is Boolean
        "null" -> v == null
        "integer" -> Py.isInt(v)
        "number" -> Py.isInt(v) || (Py.isFloat(v) && Py.toDouble(v).isFinite())
        else -> throw IllegalStateException("manifest schema: unknown type '$name'")
    }

    private fun typeName(v: Any?): String = when {
        v is Boolean -> "a boolean"
        v == null -> "null"
        Py.isInt(v) -> "an integer"
        Py.isFloat(v) -> if (Py.toDouble(v).isFinite()) "a number" else "a non-finite number"
        v is String -> "a string"
        v is List<*> -> "an array"
        v is Map<*, *> -> "an object"
        else -> Py.typeName(v)
    }

    fun show(v: Any?): String {
        val text = if (v is Map<*, *> || v is List<*>) typeName(v) else Json.write(v, ascii = true, allowNan = true)
        return if (text.length <= 60) text else text.substring(0, 57) + "..."
    }

    fun same(a: Any?, b: Any?): Boolean = when {
        a == null || b == null -> a == b
        Py.isInt(a) && Py.isInt(b) -> a.toString() == b.toString()
        Py.isFloat(a) && Py.isFloat(b) -> Py.toDouble(a) == Py.toDouble(b)
        a is Boolean && b is Boolean -> a == b
        a is String && b is String -> a == b
        a is List<*> && b is List<*> -> a.size == b.size && a.indices.all { same(a[it], b[it]) }
        a is Map<*, *> && b is Map<*, *> -> a.keys == b.keys && a.keys.all { same(a[it], b[it]) }
        else -> false
    }

    private val patterns = HashMap<String, Pattern>()
    private fun matches(pattern: String, value: String): Boolean {
        val m = patterns.getOrPut(pattern) { Pattern.compile(pattern) }.matcher(value)
        return m.find() && (!pattern.endsWith("$") || m.end() == value.length)
    }

    private fun join(path: String, key: Any): String = if (key is Int) "$path[$key]" else if (path.isNotEmpty()) "$path.$key" else key.toString()

    private fun num(v: Any?): Double = Py.toDouble(v)
    private fun len(s: String): Int = s.codePointCount(0, s.length)
    private fun pnum(v: Any?): String = Py.str(v)

    fun errors(value: Any?, node: Map<String, Any?>, path: String, depth: Int = 0): String? {
        val where = path.ifEmpty { "manifest" }
        if (depth > MAX_DEPTH) return "$where: nested deeper than $MAX_DEPTH levels"
        node["\$ref"]?.let { ref ->
            val r = ref as String
            if (!r.startsWith("#/\$defs/")) throw IllegalStateException("manifest schema: unsupported \$ref $r")
            val target = schema["\$defs"].obj()[r.removePrefix("#/\$defs/")].obj()
            errors(value, target, path, depth + 1)?.let { return it }
        }
        if ("type" in node) {
            val t = node["type"]
            val types = if (t is List<*>) t.map { it as String } else listOf(t as String)
            if (types.none { isType(value, it) }) return "$where: must be ${types.joinToString(" or ")}, got ${typeName(value)}"
        }
        if ("const" in node && !same(value, node["const"])) return "$where: must be ${show(node["const"])}, got ${show(value)}"
        if ("enum" in node && node["enum"].arr().none { same(value, it) }) {
            return "$where: must be one of ${node["enum"].arr().joinToString(", ") { show(it) }}; got ${show(value)}"
        }
        if (value is String) {
            if ("minLength" in node && len(value) < num(node["minLength"])) return "$where: must be at least ${pnum(node["minLength"])} characters"
            if ("maxLength" in node && len(value) > num(node["maxLength"])) return "$where: must be at most ${pnum(node["maxLength"])} characters, got ${len(value)}"
            if ("pattern" in node && !matches(node["pattern"] as String, value)) return "$where: ${show(value)} does not match ${node["pattern"]}"
        }
        if (isType(value, "number")) {
            val x = num(value)
            if ("minimum" in node && x < num(node["minimum"])) return "$where: must be >= ${pnum(node["minimum"])}, got ${show(value)}"
            if ("maximum" in node && x > num(node["maximum"])) return "$where: must be <= ${pnum(node["maximum"])}, got ${show(value)}"
            if ("exclusiveMinimum" in node && x <= num(node["exclusiveMinimum"])) return "$where: must be > ${pnum(node["exclusiveMinimum"])}, got ${show(value)}"
            if ("exclusiveMaximum" in node && x >= num(node["exclusiveMaximum"])) return "$where: must be < ${pnum(node["exclusiveMaximum"])}, got ${show(value)}"
        }
        if (value is List<*>) {
            if ("minItems" in node && value.size < num(node["minItems"])) return "$where: must have at least ${pnum(node["minItems"])} items, got ${value.size}"
            if ("maxItems" in node && value.size > num(node["maxItems"])) return "$where: must have at most ${pnum(node["maxItems"])} items, got ${value.size}"
            if ("items" in node) {
                value.forEachIndexed { i, item -> errors(item, node["items"].obj(), join(path, i), depth + 1)?.let { return it } }
            }
        }
        if (value is Map<*, *>) {
            for (key in (node["required"] as? List<*>) ?: emptyList<Any?>()) {
                if (!value.containsKey(key)) return "${join(path, key!!)}: is required"
            }
            val props = (node["properties"] as? Map<*, *>) ?: emptyMap<String, Any?>()
            val extra = if (node.containsKey("additionalProperties")) node["additionalProperties"] else true
            for ((key, item) in value) {
                val err = when {
                    props.containsKey(key) -> errors(item, props[key].obj(), join(path, key!!), depth + 1)
                    extra == false -> "${join(path, key.toString())}: is not a known field"
                    extra is Map<*, *> -> errors(item, extra.obj(), join(path, key!!), depth + 1)
                    else -> null
                }
                if (err != null) return err
            }
        }
        if ("oneOf" in node) {
            val forms = node["oneOf"].arr().map { it.obj() }
            val matching = forms.filter { errors(value, it, path, depth + 1) == null }
            if (matching.size != 1) {
                val first = if (matching.isEmpty()) errors(value, forms[0], path, depth + 1) else null
                return "$where: must match exactly one of ${forms.size} forms, matches ${matching.size}" + (if (first != null) " ($first)" else "")
            }
        }
        if ("if" in node) {
            val branch = if (errors(value, node["if"].obj(), path, depth + 1) == null) "then" else "else"
            if (branch in node) errors(value, node[branch].obj(), path, depth + 1)?.let { return it }
        }
        return null
    }

    private fun fail(err: String): Nothing {
        val at = err.indexOf(": ")
        throw if (at < 0) ManifestError(err, "") else ManifestError(err.substring(0, at), err.substring(at + 2))
    }

    /** check_manifest: the schema, then the rules it cannot express; returns the manifest. */
    fun check(manifest: Any?): Map<String, Any?> {
        errors(manifest, schema, "")?.let { fail(it) }
        val m = manifest.obj()
        val seenPaths = HashSet<String>()
        val seenFormats = HashSet<String>()
        m["artifacts"].arr().forEachIndexed { i, a ->
            val art = a.obj()
            val p = art["path"] as String
            val f = art["format"] as String
            if (p.lowercase() in seenPaths) throw ManifestError("artifacts[$i].path", "${Py.strRepr(p)} is listed twice")
            if (f in seenFormats) throw ManifestError("artifacts[$i].format", "${Py.strRepr(f)} is listed twice; a bundle carries one artifact per format")
            seenPaths.add(p.lowercase()); seenFormats.add(f)
        }
        val names = HashSet<String>()
        m["input_schema"].obj()["fields"].arr().forEachIndexed { i, f ->
            val n = f.obj()["name"] as String
            if (!names.add(n)) throw ManifestError("input_schema.fields[$i].name", "${Py.strRepr(n)} is listed twice")
        }
        val out = m["output"].obj()
        val classes = out["classes"].arr()
        val keys = classes.map { Json.write(it, sortKeys = true, allowNan = true) }
        if (keys.toSet().size != keys.size) throw ManifestError("output.classes", "a class is listed twice")
        val pos = out["positive_class"]
        if (pos != null && classes.none { same(pos, it) }) throw ManifestError("output.positive_class", "${show(pos)} is not one of the classes")
        if (classes.size == 2 && pos != null && !same(pos, classes[1])) {
            throw ManifestError("output.positive_class", "must be the second class of a binary model (its probability is column 1)")
        }
        m["canary"].obj()["rows"].arr().forEachIndexed { i, r ->
            val n = r.obj()["probabilities"].arr().size
            if (n != classes.size) throw ManifestError("canary.rows[$i].probabilities", "has $n values for ${classes.size} classes")
        }
        return m
    }
}
