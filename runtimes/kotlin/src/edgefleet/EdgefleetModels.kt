// The Firebase-ML-like facade app developers know: getModel(name, DownloadType, Conditions)
// returns a verified local model (file, version, encoder); listDownloadedModels,
// deleteDownloadedModel; a status listener with download ids and progress. Unlike Firebase:
// status() says what the SDK is doing at any time, and nothing is downloaded again when the
// app is upgraded (the store lives under the app's files dir and keeps its verified slots).
package edgefleet

import java.io.File
import java.time.Instant
import java.util.concurrent.CompletableFuture
import java.util.concurrent.Executor
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicLong

enum class DownloadType { LOCAL_MODEL, LOCAL_MODEL_UPDATE_IN_BACKGROUND, LATEST_MODEL }

data class Conditions(val requireWifi: Boolean = false, val requireCharging: Boolean = false, val requireIdle: Boolean = false)

/** What the app knows about the phone; on Android: ConnectivityManager, BatteryManager, PowerManager. */
interface DeviceState {
    fun onWifi(): Boolean = true
    fun charging(): Boolean = true
    fun idle(): Boolean = true
}

/** A state change of one model: what the SDK is doing, with the download id and progress when downloading. */
data class ModelStatus(val model: String, val state: String, val downloadId: Long? = null, val bytes: Long = 0, val total: Long = 0,
                       val version: Long? = null, val detail: String? = null, val at: String = Instant.now().toString())

class ConditionsNotMet(message: String) : EdgefleetException(message)

class EdgefleetModels(
    val client: DeviceClient,
    val store: ModelStore,
    private val device: DeviceState = object : DeviceState {},
    private val background: Executor = Executors.newSingleThreadExecutor { r -> Thread(r, "edgefleet-models").apply { isDaemon = true } },
    val capabilities: Map<String, Any?> = mapOf("backends" to listOf("tflite"), "formats" to listOf("tflite")),
) {
    private val ids = AtomicLong()
    private val listeners = ArrayList<(ModelStatus) -> Unit>()
    private val statuses = LinkedHashMap<String, ModelStatus>()
    var lastInstall: Map<String, Any?>? = null
        private set
    private var lastStatusAt = 0L

    /** How often an idle sync (nothing new assigned) still reports status. */
    var statusSeconds = 30.0

    fun addStatusListener(l: (ModelStatus) -> Unit) { synchronized(listeners) { listeners.add(l) } }

    /** The download-status API Firebase lacks: the last status of every model this SDK touched. */
    fun status(): List<ModelStatus> = synchronized(statuses) { statuses.values.toList() }

    private fun emit(s: ModelStatus) {
        synchronized(statuses) { statuses[s.model] = s }
        synchronized(listeners) { listeners.toList() }.forEach { it(s) }
    }

    private fun conditionsMet(c: Conditions): String? = when {
        c.requireWifi && !device.onWifi() -> "waiting for Wi-Fi"
        c.requireCharging && !device.charging() -> "waiting for charging"
        c.requireIdle && !device.idle() -> "waiting for the device to be idle"
        else -> null
    }

    /**
     * LOCAL_MODEL: the installed model if any, else the latest. LOCAL_MODEL_UPDATE_IN_BACKGROUND:
     * the installed model now and an update in the background. LATEST_MODEL: sync first. A null
     * result means no model has arrived yet: keep the feature disabled until one does.
     */
    fun getModel(name: String, type: DownloadType, conditions: Conditions = Conditions()): CompletableFuture<LocalModel?> {
        val local = store.active(name)
        return when {
            type == DownloadType.LOCAL_MODEL && local != null -> CompletableFuture.completedFuture(local)
            type == DownloadType.LOCAL_MODEL_UPDATE_IN_BACKGROUND && local != null -> {
                CompletableFuture.runAsync({ runCatching { sync(name, conditions) } }, background)
                CompletableFuture.completedFuture(local)
            }
            else -> CompletableFuture.supplyAsync({ sync(name, conditions); store.active(name) }, background)
        }
    }

    fun listDownloadedModels(): List<LocalModel> = store.list()

    fun deleteDownloadedModel(name: String): Boolean = store.delete(name).also { emit(ModelStatus(name, "deleted")) }

    /**
     * One exchange with the fleet server: poll the assignment (ETag), download (resuming), verify,
     * install with the canary replay, report status. Returns the model now active, if any.
     */
    fun sync(name: String? = null, conditions: Conditions = Conditions()): LocalModel? {
        val a = client.fetchAssignment() ?: client.lastAssignment?.takeIf { it.serial > client.lastSerial }
        if (a == null || (name != null && a.model != name)) {
            if (System.currentTimeMillis() - lastStatusAt >= statusSeconds * 1000) reportStatus(name ?: a?.model)
            return name?.let { store.active(it) }
        }
        conditionsMet(conditions)?.let { emit(ModelStatus(a.model, it, version = a.version)); throw ConditionsNotMet("${a.model} v${a.version}: $it") }
        val id = ids.incrementAndGet()
        emit(ModelStatus(a.model, "downloading", id, 0, a.size, a.version))
        val tar = try {
            client.download(a) { done, total -> emit(ModelStatus(a.model, "downloading", id, done, total, a.version)) }
        } catch (e: java.io.IOException) {
            lastInstall = mapOf("version" to a.version, "result" to "download pending: ${e.message}", "ts" to isoNow())
            emit(ModelStatus(a.model, "download pending", id, version = a.version, detail = e.message))
            throw e
        }
        emit(ModelStatus(a.model, "verifying", id, a.size, a.size, a.version))
        try {
            val m = store.install(tar, rollback = a.rollback)
            lastInstall = mapOf("version" to a.version, "result" to "installed", "ts" to isoNow())
            emit(ModelStatus(a.model, "installed", id, a.size, a.size, m.version))
        } catch (e: EdgefleetException) {
            lastInstall = mapOf("version" to a.version, "result" to "refused: ${e.message}", "ts" to isoNow())
            emit(ModelStatus(a.model, "failed", id, version = a.version, detail = e.message))
        }
        client.accept(a)
        tar.delete()
        reportStatus(a.model)
        return store.active(a.model)
    }

    fun reportStatus(model: String?, outbox: Outbox? = null) {
        lastStatusAt = System.currentTimeMillis()
        val active = model?.let { store.active(it) }
        val st = model?.let { store.state(it) }
        client.reportStatus(linkedMapOf(
            "device_id" to client.credential.deviceId, "ts" to isoNow(), "active_model" to active?.name, "active_version" to active?.version,
            "previous_version" to model?.let { store.previous(it)?.version },
            "health" to (if (active == null) "no-model" else "ok"), "last_install" to lastInstall, "capabilities" to capabilities,
            "outbox" to mapOf("depth" to (outbox?.depth ?: 0), "dropped_prediction" to (outbox?.droppedPrediction ?: 0L), "dropped_oversized" to 0,
                "dropped_rejected" to (outbox?.droppedRejected ?: 0L)),
            "agent_version" to "edgefleet-kotlin 0.1.0", "transport" to "http", "fallback" to null,
            "store" to mapOf("floor" to (st?.get("floor") ?: 0L), "recovered" to null)))
    }

    /** Poll with backoff and full jitter until [stop] says so (the app's scheduler may call sync() instead). */
    fun pollLoop(pollSeconds: Double, stop: () -> Boolean, backoff: Backoff = Backoff()) {
        while (!stop()) {
            val wait = try { sync(); backoff.reset(); pollSeconds } catch (e: Exception) { backoff.next() }
            Thread.sleep((wait * 1000).toLong())
        }
    }
}
