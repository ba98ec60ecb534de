// The code docs/mobile.md shows, compiled with the tests so the documented calls stay real.
// (The LiteRT Interpreter lines in the doc are not here: LiteRT Java is not reachable on this machine.)
package edgefleet.test

import edgefleet.*
import java.io.File

/** docs/mobile.md "Getting a model": enrol once, then getModel; null means keep the feature off. */
fun documentedFlow(filesDir: File, server: String, enrollmentToken: String, scorer: Scorer): LocalModel? {
    val credFile = File(filesDir, "edgefleet/credential.json")
    val cred = if (credFile.exists()) Credential.load(credFile)
               else DeviceClient.enroll(server, enrollmentToken, "phone-42", saveTo = credFile)
    val client = DeviceClient(cred, File(filesDir, "edgefleet/client"))
    val store = ModelStore(File(filesDir, "edgefleet/models"), client.publisherKeys, scorer)
    val models = EdgefleetModels(client, store, object : DeviceState {
        override fun onWifi() = true      // ConnectivityManager on a phone
        override fun charging() = true    // BatteryManager
    })
    models.addStatusListener { s -> println("${s.model}: ${s.state} ${s.bytes}/${s.total} (download ${s.downloadId})") }
    val model = models.getModel("churn", DownloadType.LOCAL_MODEL_UPDATE_IN_BACKGROUND, Conditions(requireWifi = true)).get()
    return model
}

/** docs/mobile.md "Scoring": the encoder turns records into the artifact's input; the Scorer runs it. */
fun documentedScoring(model: LocalModel, scorer: Scorer, record: Map<String, Any?>, customerId: String, telemetry: Telemetry): Any? {
    val input = try { model.encoder.encodeOne(record) } catch (e: InputError) {
        println("refused: ${e.field}: ${e.reason}"); return null
    }
    val p = scorer.predict(model.file, input)[0]
    val row = Encoding.encodeRecords(model.encoder.fields, listOf(record))
    telemetry.onPrediction(model, record, row, p[1], model.label(p), entityId = customerId)
    return model.label(p)
}
