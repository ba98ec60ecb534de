"""The two thin processor shells around ``runtimes.nifi.core``; ``edgefleet minifi package`` writes each as ScoreChurn.py."""
