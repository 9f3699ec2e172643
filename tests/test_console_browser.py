"""The web console in a real browser: headless Chromium (Debian's ``chromium``, driven
by Playwright) against a real ``tarbox serve``, through what a user does: log in,
browse to a file and preview it, run an agent through the API, see the run and the
files it changed, diff two checkpoints, go back to the first, see the file as it
was, log out.

Skips, saying why, where Chromium or Playwright is missing. With
``TARBOX_SCREENSHOTS=DIR`` it saves the screenshots of docs/console.md there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from server_support import b64, client
from tarbox.tokens import create_token
from tarbox.wasi.toolchain import build_c

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's package)")
AGENT = Path(__file__).parents[1] / "src" / "tarbox" / "examples" / "agent.c"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _shot(page, name: str) -> None:
    where = os.environ.get("TARBOX_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=False)


def test_a_user_looks_at_an_agents_run_and_undoes_it(server, browser, tb, tenant, fs):
    fs.makedirs("/workspace/out")
    fs.write_file("/workspace/input.txt", b"the quick brown fox\njumps over the lazy dog\n")
    fs.write_file("/workspace/out/report.md", b"# draft\n\nnothing yet\n")
    fs.write_file("/workspace/tool.py", b"def answer():\n    return 42\n")
    token, _ = create_token(tb, tenant, name="browser")
    page = browser.new_page(viewport={"width": 1280, "height": 800})

    # log in: the token goes in a form, never in the URL; the browser keeps a cookie
    page.goto(server.url + "/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#token", token)
    _shot(page, "login")
    page.click("#login")
    assert page.url.endswith("/ui/files/")
    assert token not in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "tarbox_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]

    # browse to a file and preview it, highlighted
    page.click("text=workspace/")
    page.click("text=tool.py")
    assert page.locator("#preview").inner_text().count("return 42") == 1
    assert page.locator("#preview span.k").first.inner_text() == "def"  # a Python keyword, highlighted
    _shot(page, "file")

    # an agent runs through the API, between two checkpoints
    with client(server, tb, tenant) as api:
        before = api.post("/v1/checkpoints", json={"message": "before the agent"}).json()["id"]
        ran = api.post("/v1/runs", json={"wasm_base64": b64(build_c(AGENT)), "args": ["summarise"]}).json()
        assert ran["status"] == "exited" and ran["exit_code"] == 0, ran
        after = api.post("/v1/checkpoints", json={"message": "after the agent"}).json()["id"]

    # the run appears, with its output and the files it changed
    page.click("text=Runs")
    page.click(f"a[href='/ui/runs/{ran['run_id']}']")
    assert page.locator("#run-status").inner_text() == "exited"
    assert page.locator("#run-exit").inner_text() == "0"
    assert "2 lines, 9 words" in page.locator("#stdout").inner_text()
    changed = page.locator("#changed").inner_text()
    assert "/workspace/out/report.md" in changed and "/workspace/agent.log" in changed
    _shot(page, "run")

    # the diff between the two checkpoints, unified then side by side
    page.click("text=History")
    page.check(f"input[name=a][value='{before}']")
    page.check(f"input[name=b][value='{after}']")
    page.click("#diff-button")
    assert f"a={before}" in page.url and f"b={after}" in page.url
    changes = page.locator("#changes").inner_text()
    assert "/workspace/out/report.md" in changes and "modified" in changes
    assert "/workspace/agent.log" in changes and "added" in changes
    diff_text = page.locator(".filediff", has_text="/workspace/out/report.md").inner_text()
    assert "nothing yet" in diff_text and "lines: 2" in diff_text
    page.click("#split")
    report = page.locator(".filediff", has_text="/workspace/out/report.md")
    assert "nothing yet" in " ".join(report.locator("td.removed").all_inner_texts())
    assert report.locator("td.added").count() >= 3  # the new report's lines, beside the old
    _shot(page, "diff")

    # go back to the first checkpoint: the confirmation says what will change
    page.click("text=History")
    page.click(f"#layer-{before} a.rollback")
    plan = page.locator("#plan").inner_text()
    assert re.search(r"/workspace/out/report.md\s+reverts", plan)
    assert re.search(r"/workspace/agent.log\s+goes away", plan)
    _shot(page, "rollback")
    page.click("#confirm-rollback")
    assert page.locator("#rolled-back").is_visible()

    # the file as it was
    page.goto(server.url + "/ui/files/workspace/out/report.md")
    assert "nothing yet" in page.locator("#preview").inner_text()
    page.goto(server.url + "/ui/files/workspace/")
    assert "agent.log" not in page.locator("#listing").inner_text()
    assert tb.filesystem(tenant).read_file("/workspace/out/report.md") == b"# draft\n\nnothing yet\n"

    # later writes branch from there; nothing was destroyed: the agent's layer is still listed
    with client(server, tb, tenant) as api:
        api.put("/v1/files/workspace/out/report.md", content=b"# second try\n").raise_for_status()
        retry = api.post("/v1/checkpoints", json={"message": "second try"}).json()["id"]
    page.click("text=History")
    assert page.locator(f"#layer-{after}").is_visible() and page.locator(f"#layer-{retry}").is_visible()
    assert "after the agent" in page.locator(f"#layer-{after}").inner_text()
    _shot(page, "history")

    # log out: the session is gone, the pages want a login again
    page.click("#logout")
    assert page.url.endswith("/ui/login")
    page.goto(server.url + "/ui/files/")
    assert page.url.endswith("/ui/login")
    page.close()


def test_admin_sees_tenants_with_usage_against_quota(server, browser, tb, new_tenant):
    t = new_tenant(quota_bytes=1 << 20)
    tb.filesystem(t).write_file("/half", os.urandom(512 << 10))  # random: no block is shared
    token, _ = create_token(tb, None, admin=True)
    page = browser.new_page()
    page.goto(server.url + "/ui/login")
    page.fill("#token", token)
    page.click("#login")
    assert page.url.endswith("/ui/admin")
    row = page.locator("#tenants tr", has_text=t.name).inner_text()
    assert "512.0 KiB" in row and "1.0 MiB" in row and "50 %" in row
    _shot(page, "admin")
    page.close()
