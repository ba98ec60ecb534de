package edgefleet.test

import edgefleet.*
import java.io.File

object StoreTests {
    fun run(plan: Map<String, Any?>) {
        val root = File(plan["root"] as String)
        val trusted = TrustedKeys.fromPems(listOf(File(plan["pubkey"] as String).readText()))
        val b = plan["bundles"].obj().mapValues { File(it.value as String) }
        LiteRtWorkerScorer(plan["python"] as String, plan["worker"] as String).use { scorer ->
            val store = ModelStore(root, trusted, scorer)
            T.test("install v1: verified, canaries replayed through LiteRT, active") {
                val m = store.install(b["v1"]!!)
                eq(m.version, 1L, "version"); eq(store.active("churn")?.version, 1L, "active")
                check(scorer.calls >= 1) { "the canaries were not replayed" }
                eq((store.lastHealthCheck!!["failures"] as List<*>).size, 0, "canary failures")
            }
            T.test("install v2 into the other slot; v1 stays as previous") {
                store.install(b["v2"]!!)
                eq(store.active("churn")?.version, 2L, "active"); eq(store.previous("churn")?.version, 1L, "previous")
                eq(store.active("churn")?.slot == store.previous("churn")?.slot, false, "same slot")
            }
            T.test("a lower version is refused without a signed rollback") {
                val e = refuses<InstallRefused>("rollback") { store.install(b["v1"]!!) }
                check(e.message!!.contains("not above the active v2")) { e.message!! }
                eq(store.active("churn")?.version, 2L, "active")
            }
            T.test("a signed rollback assignment may go below the floor; the floor stays") {
                store.install(b["v1"]!!, rollback = true)
                eq(store.active("churn")?.version, 1L, "active"); eq(store.state("churn")["floor"], 2L, "floor")
                val e = refuses<InstallRefused>("below floor") { store.install(File(b["v1"]!!.path), rollback = false) }
                check(e.message!!.contains("not above the active v1")) { e.message!! }
            }
            T.test("a bundle whose canaries fail is reverted: the previous model keeps serving") {
                store.install(b["v2"]!!)
                val e = refuses<HealthCheckError>("bad canary") { store.install(b["bad"]!!) }
                check(e.message!!.contains("reverted to v2") && e.failures.isNotEmpty()) { e.message!! }
                eq(store.active("churn")?.version, 2L, "active")
                eq(File(root, "churn").listFiles()!!.count { it.isDirectory }, 1, "slots left (the failed one is cleared)")
            }
            T.test("the floor survives losing one of its two files") {
                File(root, "churn/floor").delete()
                eq(ModelStore(root, trusted, scorer).state("churn")["floor"], 2L, "floor from state.json")
            }
            T.test("no temp files are left by the atomic writes") {
                val tmp = root.walkTopDown().filter { it.name.endsWith(".tmp") }.toList()
                eq(tmp, emptyList<File>(), "temp files")
            }
            T.test("a slot changed on disk is never served: the other verified slot takes over") {
                store.install(b["v4"]!!)
                val active = store.active("churn")!!
                eq(active.version, 4L, "active before the change")
                active.file.appendBytes(byteArrayOf(0))
                val now = store.active("churn")
                check(now != null && now.slot != active.slot && now.version == 2L) { "served the changed slot (${now?.version})" }
                check(store.fallback != null) { "no fallback recorded" }
            }
            T.test("delete keeps the anti-rollback floor") {
                check(store.delete("churn")) { "delete" }
                eq(store.active("churn"), null, "active after delete")
                eq(store.state("churn")["floor"], 4L, "floor")
                val e = refuses<InstallRefused>("below floor after delete") { store.install(b["v2"]!!) }
                check(e.message!!.contains("below the anti-rollback floor 4")) { e.message!! }
            }
        }
    }
}
