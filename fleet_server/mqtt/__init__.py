"""MQTT: the embedded broker, Mosquitto (password/ACL files and dynamic security), and the bridge
that turns device publishes into database rows."""
