"""The fleet server as a MiNiFi/NiFi C2 server: its assets are edgefleet's signed bundles (docs/minifi.md)."""
