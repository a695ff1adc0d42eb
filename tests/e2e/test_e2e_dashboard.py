"""The dashboard in a real headless Chromium, against a real daemon subprocess.

One daemon in manual mode on a standalone venue (the embedded venue's code,
in its own process so the test can ask it what really happened). Through
the page: approve a parked proposal -> the order reaches the venue and the
overview shows the position after its fill; an actor crashed through the
control socket goes red in the tree, then green when its supervisor brings
it back; a reason holding HTML shows as text; the kill switch (with its
confirmation) empties the positions table. No console errors. Screenshots of
every page go to /tmp/stockade-dashboard-screenshots/.
"""

from __future__ import annotations

import pytest
from browser import Browser, need_browser
from daemon_harness import DaemonProcess, settings_text
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)

# The first parked buy on the approvals page: [proposal id, symbol], read in one go (rows are live).
FIRST_BUY = """
for (const b of document.querySelectorAll('button[data-approve]')) {
  const cells = b.closest('tr').querySelectorAll('td');
  if (cells[2].textContent === 'buy') return [b.dataset.approve, cells[1].textContent];
}
return null;
"""


def _settings(venue):
    return settings_text(
        venue,
        voter={"mode": "manual", "cooldown_s": 0.5, "approval_timeout_s": 120.0},
        # A restarted actor stays down for a visible moment (the page updates every 0.25 s).
        supervision={"backoff_initial_s": 2.5, "backoff_max_s": 2.5},
        dashboard={"port": 0, "control": True, "update_interval_s": 0.25},
    )


def test_dashboard_in_a_real_browser(short_dir, venue):
    need_browser()
    from selenium.webdriver.common.by import By

    daemon = DaemonProcess(short_dir / "data", _settings(venue), venue)
    browser = None
    try:
        daemon.wait_ready()
        login = daemon.dashboard_login_url()
        browser = Browser()
        d = browser.driver

        def css(selector):
            return d.find_elements(By.CSS_SELECTOR, selector)

        def click(selector):
            css(selector)[0].click()
            return True

        def page(name):
            d.find_element(By.CSS_SELECTOR, f'nav a[data-page="{name}"]').click()
            wait_for(lambda: d.find_element(By.ID, f"page-{name}").is_displayed(), 10, 0.05, f"page {name}")

        d.get(login)
        # The login URL set the session cookie and sent us on: the token is no longer in the address bar.
        assert "token=" not in d.current_url
        wait_for(lambda: d.find_element(By.ID, "live").text == "live", 30, 0.1, "the live update stream")
        wait_for(lambda: d.find_element(By.ID, "state").text == "ACTIVE", 30, 0.1, "the trading state")

        # Approve a parked buy from the approvals page: the order reaches the venue.
        page("approvals")
        found = wait_for(lambda: d.execute_script(FIRST_BUY), 90, 0.2, "a parked buy proposal with its Approve button")
        proposal, symbol = found
        browser.screenshot("approvals")
        assert daemon.status()["orders_placed"] == 0 and venue.orders() == []  # nothing went out unapproved
        wait_for(lambda: click(f'button[data-approve="{proposal}"]'), 10, 0.1, "the Approve button clicked")
        wait_for(
            lambda: "approve: done" in d.find_element(By.ID, "control-result").text, 30, 0.2, "the approval's answer"
        )
        placed = wait_for(lambda: [o for o in venue.orders() if o.symbol == symbol], 30, 0.2, "the order at the venue")
        assert placed[0].side.value == "buy"
        audit = daemon.ok("audit", n=50)
        assert any(
            a["cmd"] == "approve" and a["via"].startswith("dashboard") and proposal in a["args"] and a["ok"]
            for a in audit
        ), audit

        # The decisions page shows the proposal: its votes, the risk verdict, the order it led to.
        page("decisions")
        row = f'#decisions tr[data-proposal="{proposal}"]'
        wait_for(
            lambda: "allowed" in css(row)[0].text and "buy" in css(row)[0].find_elements(By.TAG_NAME, "td")[7].text,
            30,
            0.2,
            "the approved proposal with its verdict and order on the decisions page",
        )
        browser.screenshot("decisions")

        # The overview shows the position once it has filled.
        page("overview")
        wait_for(
            lambda: css(f'#positions-table tr[data-symbol="{symbol}"]'), 60, 0.2, f"{symbol} in the positions table"
        )
        browser.screenshot("overview")
        for name in ("alerts", "equity", "report"):
            page(name)
            browser.screenshot(name)

        # Crash an actor through the control socket: red, then green again.
        page("tree")
        node = '#tree .node[data-actor="risk_guard"]'
        wait_for(lambda: "up" in css(node)[0].get_attribute("class").split(), 30, 0.1, "risk_guard green")
        restarts = daemon.actor("risk_guard")["restarts"]
        daemon.ok("crash", name="risk_guard")
        wait_for(lambda: "down" in css(node)[0].get_attribute("class").split(), 30, 0.05, "risk_guard red")
        browser.screenshot("tree-down")
        wait_for(lambda: "up" in css(node)[0].get_attribute("class").split(), 60, 0.1, "risk_guard green again")
        assert daemon.actor("risk_guard")["restarts"] > restarts
        browser.screenshot("tree")

        # Markup in a reason is shown as text, never parsed.
        page("controls")
        browser.screenshot("controls")
        hostile = '<img id="xss" src="x"><b>bold</b>'
        reason = d.find_element(By.ID, "reason")
        reason.clear()
        reason.send_keys(hostile)
        d.find_element(By.ID, "btn-halt").click()
        wait_for(lambda: d.find_element(By.ID, "state").text == "HALTED", 30, 0.1, "HALTED after the halt button")
        wait_for(lambda: d.find_element(By.ID, "state-reason").text == hostile, 30, 0.1, "the reason, as text")
        assert css("#xss") == [] and css("header b") == []
        reason.clear()
        reason.send_keys("back to work")
        d.find_element(By.ID, "btn-resume").click()
        wait_for(lambda: d.find_element(By.ID, "state").text == "ACTIVE", 30, 0.1, "ACTIVE after resume")

        # The kill switch, behind its confirmation step, empties the positions table.
        d.find_element(By.ID, "btn-kill").click()
        confirm = d.find_element(By.ID, "btn-kill-confirm")
        assert not confirm.is_enabled()  # nothing happens until KILL is typed
        d.find_element(By.ID, "kill-text").send_keys("KILL")
        browser.screenshot("kill-confirm")
        confirm.click()
        wait_for(lambda: "kill: done" in d.find_element(By.ID, "control-result").text, 90, 0.2, "the kill's answer")
        page("overview")
        wait_for(lambda: not css("#positions-table tr[data-symbol]"), 30, 0.2, "an empty positions table")
        assert venue.positions() == {}
        assert d.find_element(By.ID, "state").text == "HALTED"
        browser.screenshot("overview-after-kill")

        errors = browser.console_errors()
        assert errors == [], errors
    finally:
        if browser is not None:
            browser.close()
        daemon.stop()
