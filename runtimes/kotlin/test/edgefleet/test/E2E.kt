package edgefleet.test

object E2E {
    fun run(args: List<String>) {}
}
