"""The /dashboard blueprint without a browser: what it serves, to whom, and what it refuses."""

from __future__ import annotations

from typing import Any

from tests.fleet_server.conftest import Api


def test_dashboard_serves_its_page_and_chartjs_without_a_token_and_nothing_else(make_server: Any) -> None:
    api = Api(make_server())
    code, page, headers = api("GET", "/dashboard/", token=None)
    assert code == 200 and headers["content-type"].startswith("text/html") and b"Fleet monitor" in page
    assert b"vendor/chart.umd.min.js" in page and b"https://" not in page, "everything comes from this server"
    assert "default-src 'self'" in headers["content-security-policy"] and headers["referrer-policy"] == "no-referrer"
    for name, ctype in (("app.mjs", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml"),
                        ("vendor/chart.umd.min.js", "text/javascript")):
        code, body, headers = api("GET", f"/dashboard/{name}", token=None)
        assert code == 200 and headers["content-type"].startswith(ctype), name
    assert b"Chart.js v4" in api("GET", "/dashboard/vendor/chart.umd.min.js", token=None)[1][:200]
    for path in ("/dashboard/.hidden", "/dashboard/nope.html", "/dashboard/vendor/chart.js", "/dashboard/vendor/../package.json",
                 "/dashboard/../fleet_server/app.py"):
        assert api("GET", path, token=None)[0] == 404, path
    code, page, _ = api("GET", "/dashboard", token=None)  # urllib follows the 308 to /dashboard/
    assert code == 200 and b"Fleet monitor" in page
    assert api("GET", "/api/v1/alerts", token=None)[0] == 401, "the data behind the page still needs the admin token"
