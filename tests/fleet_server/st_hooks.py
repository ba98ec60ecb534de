"""schemathesis hooks for tests/fleet_server/test_fuzz.py (loaded via SCHEMATHESIS_HOOKS).

The bundle upload and the key upload take raw bytes under their own media types; send them as
schemathesis sends octet-stream and plain text bodies.
"""

import schemathesis

schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
schemathesis.serializer.alias("application/x-pem-file", "text/plain")
