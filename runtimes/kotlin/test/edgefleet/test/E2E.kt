package edgefleet.test

import edgefleet.*
import java.io.File

/**
 * The device side of tests/kotlin/test_kotlin_e2e.py against a real fleet server: enrol, report
 * capabilities, take rollout 1 through the facade (the download is cut once by the test's proxy
 * and resumed), then rollout 2 (bad canaries: reverted, reported refused), then telemetry.
 * Progress lines on stdout (ENROLLED, INSTALLED, RESULT, TELEMETRY) let the test drive the server.
 */
object E2E {
    fun run(args: List<String>) {
        val plan = Json.parse(File(args[0]).readBytes()).obj()
        val dir = File(plan["dir"] as String)
        val deadline = System.currentTimeMillis() + ((plan["timeout"] as Long) * 1000)
        val logLines = ArrayList<String>()
        fun say(s: String) { println(s); System.out.flush() }
        val cred = DeviceClient.enroll(plan["server"] as String, plan["token"] as String, plan["device_id"] as String, File(dir, "credential.json"))
        say("ENROLLED ${cred.deviceId}")
        val client = DeviceClient(cred, File(dir, "client")) { synchronized(logLines) { logLines.add(it) }; say("LOG $it") }
        LiteRtWorkerScorer(plan["python"] as String, plan["worker"] as String).use { scorer ->
            val store = ModelStore(File(dir, "models"), client.publisherKeys, scorer)
            val models = EdgefleetModels(client, store)
            val progress = ArrayList<ModelStatus>()
            models.addStatusListener { synchronized(progress) { progress.add(it) } }
            T.test("no model before the first rollout: the feature stays disabled") {
                eq(models.getModel("churn", DownloadType.LOCAL_MODEL).get(), null, "model")
                models.reportStatus(null)
            }
            say("REPORTED")
            fun until(what: String, cond: () -> Boolean) {
                while (!cond()) {
                    check(System.currentTimeMillis() < deadline) { "timed out waiting for $what" }
                    try { models.getModel("churn", DownloadType.LATEST_MODEL).get() } catch (e: Exception) { say("LOG sync: ${e.cause?.message ?: e.message}") }
                    Thread.sleep(200)
                }
            }
            T.test("rollout 1 off Wi-Fi with requireWifi: nothing is downloaded, the status says why") {
                val offWifi = EdgefleetModels(client, store, object : DeviceState { override fun onWifi() = false })
                while (true) {
                    check(System.currentTimeMillis() < deadline) { "timed out waiting for the v1 assignment" }
                    val e = try { offWifi.getModel("churn", DownloadType.LATEST_MODEL, Conditions(requireWifi = true)).get(); null }
                            catch (x: java.util.concurrent.ExecutionException) { x.cause }
                    if (e != null) { check(e is ConditionsNotMet) { "$e" }; break }
                    Thread.sleep(200)
                }
                eq(offWifi.status().single().state, "waiting for Wi-Fi", "status")
                eq(File(dir, "client/downloads").listFiles()?.size ?: 0, 0, "files downloaded off Wi-Fi")
            }
            T.test("rollout 1: downloaded (cut once, resumed), verified, canaries pass, installed") {
                until("v1") { store.active("churn")?.version == 1L }
                val ids = synchronized(progress) { progress.filter { it.state == "downloading" }.mapNotNull { it.downloadId }.toSet() }
                check(synchronized(logLines) { logLines.any { it.startsWith("download resumed at byte") } }) { "the download was not resumed" }
                check(synchronized(progress) { progress.any { it.state == "installed" && it.version == 1L } }) { "no installed status" }
                check(ids.size >= 2) { "one download id per attempt: $ids" }
                eq(models.lastInstall?.get("result"), "installed", "last_install")
                eq(models.listDownloadedModels().map { it.name to it.version }, listOf("churn" to 1L), "listDownloadedModels")
            }
            say("INSTALLED 1")
            T.test("rollout 2 with bad canaries: reverted to v1 and reported refused") {
                until("v2's result") { models.lastInstall?.get("version") == 2L }
                val r = models.lastInstall!!["result"] as String
                check(r.startsWith("refused: health check failed")) { r }
                eq(store.active("churn")?.version, 1L, "active")
                say("RESULT 2 $r")
            }
            T.test("telemetry: predictions and a sketch through the outbox, acknowledged by the server") {
                val active = store.active("churn")!!
                val records = Json.parse(File(plan["records"] as String).readBytes()).arr()
                val outbox = Outbox(File(dir, "outbox"))
                val tel = Telemetry(outbox, cred.deviceId, includeFeatures = plan["features"] == true)
                val probs = scorer.predict(active.file, active.encoder.encode(records))
                val rows = Encoding.encodeRecords(active.fields(), records)
                val nf = active.encoder.fields.size
                records.forEachIndexed { i, r ->
                    tel.onPrediction(active, r.obj(), rows.copyOfRange(i * nf, (i + 1) * nf), probs[i][1], active.label(probs[i]), "cust-$i")
                }
                tel.flushWindow()
                eq(outbox.depth, records.size + 1, "outbox depth")
                val first = outbox.pending(1).single().second
                val acked = outbox.flush(client)
                eq(acked, records.size + 1, "acknowledged"); eq(outbox.depth, 0, "outbox after flush")
                val resent = client.postTelemetry(mapOf("device_id" to cred.deviceId, "sent_at" to isoNow(), "messages" to listOf(first)))
                eq(resent, 0L to 1L, "a resent message (accepted, duplicates)")
                models.reportStatus("churn", outbox)
                say("TELEMETRY $acked")
            }
        }
    }
}

fun LocalModel.fields(): List<Map<String, Any?>> = encoder.fields
