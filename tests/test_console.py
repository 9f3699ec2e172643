"""The web console's security and pages over real HTTP (a real ``tarbox serve``, httpx
as the browser): login and its cookie, session fixation, CSRF and Origin checks on
the forms that change something, read-only and admin consoles, tenant isolation
whatever the URL says, path tricks, revocation, and what the pages show (checked
against what was written, not against the console's own output)."""

from __future__ import annotations

import os
import re
import uuid

import httpx
import psycopg

import tarbox
from server_support import start_server
from tarbox.storage.server import ensure_database
from tarbox.tokens import create_token, revoke_token


def browser(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=60)


def login(server, token: str) -> httpx.Client:
    c = browser(server)
    r = c.post("/ui/login", data={"token": token})
    assert r.status_code == 303, r.text
    return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_login_sets_a_strict_http_only_cookie_and_never_puts_the_token_in_a_url(server, tb, tenant):
    token, _ = create_token(tb, tenant)
    c = browser(server)
    r = c.get("/ui/files/")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    r = c.post("/ui/login", data={"token": token})
    assert r.status_code == 303 and token not in r.headers["location"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert token not in cookie and "Secure" not in cookie  # plain HTTP here; Secure over TLS
    page = c.get("/ui/files/")
    assert page.status_code == 200 and token not in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
    assert page.headers["x-frame-options"] == "DENY"


def test_behind_a_tls_proxy_the_cookie_is_secure(server, tb, tenant):
    token, _ = create_token(tb, tenant)
    # a TLS-terminating proxy on the same host says so; uvicorn trusts it from 127.0.0.1 only
    r = browser(server).post("/ui/login", data={"token": token}, headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and "; Secure" in r.headers["set-cookie"]


def test_bad_tokens_get_the_form_again_with_the_reason(server, tb, tenant):
    c = browser(server)
    good, info = create_token(tb, tenant)
    for bad in ["", "tbx_nonsense", good[:-4] + "AAAA"]:  # missing, malformed, wrong secret
        r = c.post("/ui/login", data={"token": bad})
        assert r.status_code == 401 and "set-cookie" not in r.headers, bad
        assert 'id="login-error"' in r.text
    revoke_token(tb, info.id)
    r = c.post("/ui/login", data={"token": good})
    assert r.status_code == 401 and "revoked" in r.text


def test_a_session_id_the_browser_brings_is_never_adopted(server, tb, tenant):
    token, _ = create_token(tb, tenant)
    c = browser(server)
    c.cookies.set("tarbox_session", "chosen-by-an-attacker", path="/ui")
    r = c.post("/ui/login", data={"token": token})
    issued = re.search(r"tarbox_session=([^;]+)", r.headers["set-cookie"]).group(1)
    assert issued != "chosen-by-an-attacker"
    attacker = browser(server)
    attacker.cookies.set("tarbox_session", "chosen-by-an-attacker", path="/ui")
    assert attacker.get("/ui/files/").status_code == 303  # the planted id opens nothing
    # logging in again mints another id, and the old one stops working
    c2 = browser(server)
    c2.cookies.set("tarbox_session", issued, path="/ui")
    again = c2.post("/ui/login", data={"token": token})
    second = re.search(r"tarbox_session=([^;]+)", again.headers["set-cookie"]).group(1)
    assert second != issued
    stale = browser(server)
    stale.cookies.set("tarbox_session", issued, path="/ui")
    assert stale.get("/ui/files/").status_code == 303


def test_rollback_needs_the_csrf_token_and_the_same_origin(server, tb, tenant, fs):
    fs.write_file("/f", b"one")
    first = fs.checkpoint("one").id
    fs.write_file("/f", b"two")
    token, _ = create_token(tb, tenant)
    c = login(server, token)
    confirm = c.get(f"/ui/rollback?layer={first}")
    assert confirm.status_code == 200
    csrf = csrf_of(confirm.text)
    forged = [
        ({"layer": first}, {}),  # no token: a cross-site form cannot read it
        ({"layer": first, "csrf": "guess"}, {}),
        ({"layer": first, "csrf": csrf}, {"Origin": "https://evil.example"}),
        ({"layer": first, "csrf": csrf}, {"Referer": "https://evil.example/page"}),
        ({"layer": first, "csrf": csrf}, {"Origin": "null"}),
    ]
    for data, headers in forged:
        r = c.post("/ui/rollback", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
        assert tb.filesystem(tenant).read_file("/f") == b"two"
    # another session's secret is not this one's
    other = login(server, token)
    r = other.post("/ui/rollback", data={"layer": first, "csrf": csrf})
    assert r.status_code == 403
    r = c.post("/ui/rollback", data={"layer": first, "csrf": csrf}, headers={"Origin": server.url})
    assert r.status_code == 303
    assert tb.filesystem(tenant).read_file("/f") == b"one"


def test_login_from_another_site_is_refused(server, tb, tenant):
    token, _ = create_token(tb, tenant)
    r = browser(server).post("/ui/login", data={"token": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_the_rollback_confirmation_says_exactly_what_will_change(server, tb, tenant, fs):
    fs.write_file("/keep", b"k")
    fs.write_file("/edit", b"old")
    fs.write_file("/gone", b"g")
    first = fs.checkpoint("first").id
    fs.write_file("/edit", b"new and longer")
    fs.remove("/gone")
    fs.write_file("/new", b"n")
    c = login(server, create_token(tb, tenant)[0])
    html = c.get(f"/ui/rollback?layer={first}").text
    plan = dict(re.findall(r"<tr class=\"\w+\"><td>([^<]+)</td><td>([^<]+)</td>", html))
    assert plan == {"/edit": "reverts", "/gone": "comes back", "/new": "goes away"}


def test_a_read_only_token_gets_a_read_only_console(server, tb, tenant, fs):
    fs.write_file("/f", b"one")
    first = fs.checkpoint("one").id
    fs.write_file("/f", b"two")
    c = login(server, create_token(tb, tenant, read_only=True)[0])
    history = c.get("/ui/history").text
    assert 'id="read-only"' in history and "/ui/rollback?layer=" not in history
    assert c.get(f"/ui/rollback?layer={first}").status_code == 403
    csrf = csrf_of(history)
    r = c.post("/ui/rollback", data={"layer": first, "csrf": csrf}, headers={"Origin": server.url})
    assert r.status_code == 403 and "read-only" in r.text
    assert tb.filesystem(tenant).read_file("/f") == b"two"


def test_a_tenant_never_sees_another_tenants_data_whatever_the_url(server, tb, new_tenant):
    a, b = new_tenant(), new_tenant()
    tb.filesystem(a).write_file("/mine", b"A's")
    fb = tb.filesystem(b)
    fb.write_file("/secret", b"B's secret")
    b_layer = fb.checkpoint("b's").id
    c = login(server, create_token(tb, a)[0])
    assert c.get("/ui/files/secret").status_code == 404
    assert c.get("/ui/raw/secret").status_code == 404
    for url in [
        f"/ui/files/?tenant={b.id}",
        f"/ui/files/?tenant={b.name}",
        f"/ui/files/{b.id}/secret",
        f"/ui/files/{b.name}/secret",
        "/ui/history",
        "/ui/audit?path=/secret",
        f"/ui/diff?a={b_layer}",
        "/ui/admin",
    ]:
        r = c.get(url, headers={"X-Tarbox-Tenant": str(b.id)})
        text = r.text.replace("&#39;", "'")
        assert "B's secret" not in text and "b's" not in text, url  # B's content, B's layer message
        if r.status_code == 200:
            assert "/secret<" not in text, url  # no listing, diff or audit row of B's file
    diff = c.get(f"/ui/diff?a={b_layer}")
    assert diff.status_code in (400, 404) or "/secret" not in diff.text
    assert c.get("/ui/admin").status_code == 403
    assert "/mine" in c.get("/ui/audit").text


def test_path_tricks_stay_inside_the_tenant(server, tb, tenant, fs):
    fs.write_file("/top", b"top")
    c = login(server, create_token(tb, tenant)[0])
    raw = httpx.Client(base_url=server.url, cookies=c.cookies, timeout=30)
    for trick in [
        "/ui/files/..%2f..%2fetc%2fpasswd",
        "/ui/files/%2e%2e/%2e%2e/etc/passwd",
        "/ui/raw/..%2fetc%2fpasswd",
    ]:
        r = raw.get(trick)
        assert r.status_code in (400, 404), trick
        assert "root:" not in r.text
    assert c.get("/ui/files/a%00b").status_code == 400
    assert c.get("/ui/files/" + "x" * 300).status_code in (400, 404)  # an over-long name
    assert c.get("/ui/files/.tarbox/layers/list").status_code == 404  # hidden, as for the API
    fs.symlink("/loop2", "/loop1")
    fs.symlink("/loop1", "/loop2")
    page = c.get("/ui/files/loop1")  # shown as a link, not followed
    assert page.status_code == 200 and 'id="symlink"' in page.text
    assert c.get("/ui/raw/loop1").status_code == 400  # ELOOP, a clear error


def test_revoking_the_token_ends_the_session(server, tb, tenant):
    token, info = create_token(tb, tenant)
    c = login(server, token)
    assert c.get("/ui/files/").status_code == 200
    revoke_token(tb, info.id)
    r = c.get("/ui/files/")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"


def test_logout_needs_the_csrf_token_and_ends_the_session(server, tb, tenant):
    c = login(server, create_token(tb, tenant)[0])
    page = c.get("/ui/files/").text
    assert c.post("/ui/logout", data={}).status_code == 403
    r = c.post("/ui/logout", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert c.get("/ui/files/").status_code == 303


def test_pages_show_what_was_written(server, tb, tenant, fs):
    fs.makedirs("/d")
    for i in range(250):
        fs.write_file(f"/d/f{i:03}", b"x" * i)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    fs.write_file("/pic.png", png)
    fs.write_file("/blob", bytes(range(256)))
    fs.write_file("/code.py", b"import os\n\nprint(os.getcwd())\n")
    c = login(server, create_token(tb, tenant)[0])
    pages = [c.get(f"/ui/files/d?offset={o}").text for o in (0, 100, 200)]
    names = [n for p in pages for n in re.findall(r">(f\d{3})</a>", p)]
    assert names == sorted(f"f{i:03}" for i in range(250))  # every entry once, paged by 100
    assert "251–250" not in pages[2] and "201–250 of 250" in pages[2]
    img = c.get("/ui/raw/pic.png?inline=1")
    assert img.content == png and img.headers["content-type"] == "image/png"
    assert img.headers["content-security-policy"].startswith("sandbox")
    blob = c.get("/ui/raw/blob?inline=1")  # not an image: never inline
    assert (
        blob.headers["content-type"] == "application/octet-stream"
        and "attachment" in blob.headers["content-disposition"]
    )
    assert blob.content == bytes(range(256))
    hexdump = c.get("/ui/files/blob").text
    assert "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f" in hexdump
    assert "rw-r--r-- (0644)" in hexdump  # write_file's default mode, as ls -l shows it
    code = c.get("/ui/files/code.py").text
    assert "<title>/code.py · Tarbox</title>" in code
    assert '<span class="kn">import</span>' in code  # Pygments' class for a keyword namespace
    assert "&lt;script&gt;" not in code
    fs.write_file("/x.html", b"<script>alert(1)</script>")
    shown = c.get("/ui/files/x.html").text
    assert "<script>alert(1)</script>" not in shown and "alert" in shown


def test_a_big_diff_lists_every_file_and_shows_lines_within_its_limits(server, tb, tenant, fs):
    first = fs.checkpoint("empty").id
    with fs.batch():
        fs.write_file("/a-long.txt", b"".join(b"line %d\n" % i for i in range(25_000)))
        for i in range(205):
            fs.write_file(f"/f{i:03}.txt", f"line {i}\n".encode())
    c = login(server, create_token(tb, tenant)[0])
    html = c.get(f"/ui/diff?a={first}").text
    listed = re.findall(r'<a href="#d\d+">(/[\w.-]+)</a>', html)
    assert listed == ["/a-long.txt"] + [f"/f{i:03}.txt" for i in range(205)]  # every file listed
    # lines: 20,000 in all, all of them the long file's; files past the 200th get no patch at all
    assert html.count('<tr class="added"><td class="no">') == 20_000 - 1  # the hunk header counts too
    assert html.count("the rest of this file&#39;s diff is not shown") == 1
    assert html.count("the page shows 20,000 lines") == 199
    assert html.count("only the first 200 files") == 6


def _rename_database(server_url: str, old: str, new: str) -> None:
    """Rename a database that a server's pool keeps connecting to: end its sessions and
    rename before the pool reconnects (a few tries)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for _ in range(50):
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (old,))
            try:
                conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
                return
            except psycopg.errors.ObjectInUse:
                continue
    raise AssertionError(f"could not rename {old}")


def test_the_database_gone_is_a_clear_page_and_loses_nothing(server_url, tmp_path, monkeypatch):
    name = f"tarbox_ui_{uuid.uuid4().hex[:10]}"
    url = ensure_database(server_url, name)
    tb = tarbox.connect(url)
    try:
        t = tb.create_tenant("gone")
        tb.filesystem(t).write_file("/kept", b"committed before")
        token, _ = create_token(tb, t)
    finally:
        tb.close()
    monkeypatch.setenv("TARBOX_DB_WAIT", "2")  # the server gives up on the database after 2 s
    srv = start_server(url, tmp_path)
    try:
        c = login(srv, token)
        assert c.get("/ui/files/kept").status_code == 200
        _rename_database(server_url, name, f"{name}_away")  # the server's database vanishes
        r = c.get("/ui/files/kept")
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
        assert 'id="error-message"' in r.text and "Traceback" not in r.text
        again = browser(srv).post("/ui/login", data={"token": token})
        assert again.status_code == 503 and "set-cookie" not in again.headers
        _rename_database(server_url, f"{name}_away", name)
        assert c.get("/ui/files/kept").status_code == 200  # back, with what was committed
        assert "committed before" in c.get("/ui/files/kept").text
    finally:
        srv.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_away" WITH (FORCE)')


def test_the_tree_opens_the_way_to_the_current_path(server, tb, tenant, fs):
    fs.makedirs("/a/b/c")
    fs.makedirs("/z")
    fs.write_file("/a/b/c/file.txt", b"x")
    fs.write_file("/top.txt", b"t")
    with fs.batch():
        for i in range(120):
            fs.mkdir(f"/a/s{i:03}")
    c = login(server, create_token(tb, tenant)[0])
    html = c.get("/ui/files/a/b/c/file.txt").text
    tree = html[html.index('id="tree"') : html.index("</nav>", html.index('id="tree"'))]
    links = re.findall(r'href="/ui/files/([^"]*)" class="d(\d+)( open)?', tree)
    assert links[0] == ("a", "0", " open") and ("z", "0", "") in links  # directories only: no top.txt
    assert "top.txt" not in tree and "file.txt" not in tree
    inside_a = [path for path, depth, _ in links if depth == "1"]
    assert inside_a[:100] == ["a/b"] + [f"a/s{i:03}" for i in range(99)]  # the first 100, by name
    assert "… 21 more" in tree  # 121 subdirectories of /a, 100 shown
    assert ("a/b/c", "2", " open") in links
    # a path past the first 100 is still shown on the way
    deep = c.get("/ui/files/a/s119").text
    assert 'href="/ui/files/a/s119" class="d1 open here"' in deep and "… 20 more" in deep
