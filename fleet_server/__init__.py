"""The fleet server: model registry, enrollment, rollouts, MQTT and HTTP delivery."""
