"""Every page works under kviz's Content-Security-Policy (no inline script or style), and the
browser reports no violation while the diagram draws, details open and the live view runs."""

from __future__ import annotations

from django.test import Client

CAPTURE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def watch_violations(page) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None)
    return seen


def test_the_pages_pass_the_content_security_policy(kviz_server, signed_in_page, anonymous_page,
                                                    make_user, upload_capture, corpus_path):
    owner = make_user(staff=True)
    capture_id = upload_capture(corpus_path(CAPTURE), owner)
    client = Client()
    client.force_login(owner)
    token = client.post(f"/api/captures/{capture_id}/share/", {},
                        content_type="application/json").json()["token"]

    page = signed_in_page(owner)
    violations = watch_violations(page)
    for url in ("/", "/captures/new/", f"/captures/{capture_id}/", "/admin/"):
        response = page.goto(url)
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        if url.startswith("/captures/") and url != "/captures/new/":
            page.wait_for_selector("#diagram[data-state=ready]")
            page.locator("#diagram .kd-row").first.click()  # details, with the dissection
            page.wait_for_timeout(500)
    anonymous = anonymous_page()
    violations += watch_violations(anonymous)
    for url in ("/login/", f"/s/{token}/"):
        assert anonymous.goto(url).status == 200, url
    anonymous.wait_for_selector("#diagram[data-state=ready]")
    assert violations == []
