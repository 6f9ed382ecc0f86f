"""The chat as people use it every day, in Chromium against one real server: each answer's own sources,
conversations that come back whole, the answer outcomes, the first screen on a phone and a laptop, copying,
the widget by keyboard on another site, errors, contrast and axe-core."""

from __future__ import annotations

import json
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The server and browser are the session's (conftest.py).
from test_web import ARTIFACTS, ask_in, http, new_page

pytestmark = pytest.mark.slow

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
INPUT_LABEL = "ถามคำถาม · Ask a question"
# Computed colours of an element's text and of the first opaque background behind it, as a WCAG ratio.
CONTRAST_JS = """(el) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  let bg = [255, 255, 255];
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) { bg = c; break; }
  }
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg);
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def logged(server) -> list[dict]:
    """The feedback log's whole lines (the file is created before a line is written)."""
    text = server.feedback.read_text(encoding="utf-8") if server.feedback.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def wait_for_lines(server, count: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(logged(server)) < count:
        time.sleep(0.2)
    time.sleep(0.5)  # and no more than that
    return logged(server)


def in_view(page, locator, within: float = 0) -> bool:
    """Whether the element's top shows in the viewport (now, or within `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        box = locator.bounding_box()
        shown = box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= page.viewport_size["height"]
        if shown or time.monotonic() >= deadline:
            return shown
        time.sleep(0.2)


def focused_in(scope) -> str:
    return scope.locator(":root").evaluate("() => document.activeElement && document.activeElement.outerHTML")


@pytest.fixture()
def other_site(server, tmp_path):
    """A second loopback port (another origin) serving pages that carry only the widget's tag."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def site(name: str, attributes: str = "") -> str:
        (tmp_path / name).write_text(
            f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head><body><main><h1>A shop</h1>
<p>Some page text.</p></main><script src="{server.url}/widget.js" {attributes}></script></body></html>""",
            encoding="utf-8",
        )
        return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"

    yield site
    httpd.shutdown()


# --- Sources live with their answer (finding 1, 5) ------------------------------------------------


def test_an_older_answers_citation_opens_its_own_passage_in_place_on_a_phone(server, browser):
    expected = json.loads(
        http("POST", server.url + "/api/ask", json.dumps({"question": "บราซิลยุติการเจรจาอะไร"}).encode())[2]
    )["citations"][1]
    page = new_page(browser, width=390, height=844)
    page.goto(server.url + "/", wait_until="load")
    ask_in(page, "บราซิลยุติการเจรจาอะไร")
    ask_in(page, "How far is Bogotá from Santiago?")
    older, newer = page.locator("#chat .answer").nth(0), page.locator("#chat .answer").nth(1)
    assert newer.locator("details.citation").count() == 2  # the newer answer has a [2] of its own
    link = older.locator("a.cite", has_text="[2]")
    link.click()
    page.wait_for_timeout(400)
    opened = older.locator("details.citation").nth(1)
    assert opened.evaluate("d => d.open") and older.locator("details.sources").evaluate("d => d.open")
    sentence = expected["text"][
        expected["sentence_start"] - expected["start"] : expected["sentence_end"] - expected["start"]
    ]
    assert opened.locator(".quote p[lang=th] mark").inner_text().strip() == sentence.strip()
    assert newer.locator("details[open]").count() == 0  # the newer answer's [2] was not touched
    assert in_view(page, opened.locator(":scope > summary"), within=3)  # opened where it is, not far down the page
    page.screenshot(path=str(ARTIFACTS / "chat-phone-source.png"))  # docs/chat-phone.png is a copy
    opened.locator("a.back").click()  # the way back: to the [2] that was pressed
    page.wait_for_timeout(400)
    assert link.evaluate("a => a === document.activeElement") and in_view(page, link, within=3)
    page.close()


# --- Conversations restore whole (finding 2, 9) ---------------------------------------------------


def test_reload_restores_sources_and_votes_and_the_latest_vote_counts(server, browser):
    page = new_page(browser)
    page.goto(server.url + "/", wait_until="load")
    ask_in(page, "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร")
    before = len(logged(server))
    page.locator("#chat button[aria-label='Like']").last.click()
    records = wait_for_lines(server, before + 1)
    assert len(records) == before + 1 and records[-1]["liked"] is True
    answer_id = records[-1]["answer_id"]
    # The comment box opens below the input, which stays where it was.
    question = page.locator("#question textarea").bounding_box()
    page.locator("#comment textarea").wait_for()
    assert page.locator("#comment textarea").bounding_box()["y"] > question["y"]
    assert page.locator("#question textarea").bounding_box()["y"] == question["y"]

    page.reload(wait_until="load")
    answer = page.locator("#chat .answer").first
    answer.wait_for(timeout=20_000)
    assert page.locator("#chat .message-buttons").last.locator("button[aria-label='Liked']").count() == 1
    answer.locator("a.cite").first.click()
    page.wait_for_timeout(300)
    first = answer.locator("details.citation").first
    assert first.evaluate("d => d.open")
    assert "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี" in first.locator(".quote p[lang=th] mark").inner_text()
    assert first.locator(".label").inner_text() == "การรวมกลุ่มในภูมิภาคของลาตินอเมริกา · ย่อหน้า 3"

    # A thumb on the restored answer: logged once, for the answer the server gave; the latest vote counts.
    page.locator("#chat button[aria-label='Dislike']").last.click()
    records = wait_for_lines(server, before + 2)
    assert len(records) == before + 2
    assert records[-1]["liked"] is False and records[-1]["answer_id"] == answer_id
    page.reload(wait_until="load")
    page.locator("#chat .answer").first.wait_for(timeout=20_000)
    page.locator("#chat button[aria-label='Disliked']").wait_for(timeout=20_000)
    page.close()


# --- The answer outcomes (priority 3) -------------------------------------------------------------


def test_uncertain_and_not_found_replies_as_a_reader_sees_them(server, browser):
    page = new_page(browser)
    page.goto(server.url + "/", wait_until="load")
    ask_in(page, "ALBA มีสมาชิกกี่ประเทศ")  # the documents do not say: the closest quote, under a caveat
    reply = page.locator("#chat .answer").last
    assert reply.get_attribute("class") == "answer uncertain"
    caveat = reply.locator(".caveat")
    assert "ไม่แน่ใจนัก" in caveat.inner_text() and "Not certain" in caveat.inner_text()
    assert caveat.bounding_box()["y"] < reply.locator(".text").bounding_box()["y"]
    assert reply.locator("details.citation").count() >= 1

    ask_in(page, "สูตรต้มยำกุ้งทำอย่างไร")  # nothing to do with the documents
    reply = page.locator("#chat .answer").last
    assert reply.get_attribute("class") == "answer not_found"
    assert reply.locator(".notfound").inner_text() == "ไม่พบคำตอบในเอกสาร · Not found in the documents."
    suggestions = reply.locator("button.suggest")
    assert suggestions.count() == 3  # the answer's own suggestions, each a question the documents answer
    asked = suggestions.first.inner_text()
    suggestions.first.click()
    page.locator("#chat .answer").nth(2).wait_for(timeout=30_000)
    assert asked in page.locator("#chat [data-testid=user]").last.inner_text()
    assert page.locator("#chat .answer").last.get_attribute("class") == "answer answered"
    page.close()


def test_the_three_outcomes_render_from_the_answers_fields():
    from assistant.web import answer_html

    citation = {
        "n": 1,
        "chunk_id": "doc#1",
        "source": "doc.txt",
        "title": "หมายเหตุ (4): ALBA พันธมิตรโบลิวาร์",
        "text": "ALBA(4) ก่อตั้งในปี 2004",
        "start": 10,
        "end": 34,
        "sentence_start": 10,
        "sentence_end": 34,
    }
    base = {"question": "q", "answer": "ALBA(4) ก่อตั้งในปี 2004 [1]", "language": "th", "citations": [citation]}
    answered = answer_html({**base, "status": "answered"}, "k")
    uncertain = answer_html({**base, "status": "uncertain", "confidence": 0.4}, "k")
    missing = answer_html({**base, "status": "not_found", "suggestions": ["ALBA ก่อตั้งเมื่อไร", "<b>x</b>"]}, "k")
    assert 'class="caveat"' not in answered and 'class="notfound"' not in answered
    # The caveat comes first, above the closest quotes.
    assert uncertain.index("Not certain") < uncertain.index('class="text"') < uncertain.index("details")
    assert 'lang="th">ALBA ก่อตั้งเมื่อไร</button>' in missing and "&lt;b&gt;x&lt;/b&gt;</button>" in missing
    # Until answers carry a status, a refusal is "not found", with the examples as suggestions.
    assert 'class="answer not_found"' in answer_html({**base, "refused": True, "citations": []}, "k")
    # The document's footnote mark is set apart from the link to the citation.
    assert '<sup class="fn" title="เชิงอรรถ · footnote">(4)</sup>' in answered
    assert '<a href="#cite-k-1" class="cite">[1]</a>' in answered
    assert 'title="doc.txt · doc#1 · chars 10–34">หมายเหตุ (4): ALBA</span>' in answered


# --- The first screen (finding 5, 12) -------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1366, 768)])
def test_input_and_suggested_questions_above_the_fold(server, browser, width, height):
    page = new_page(browser, width=width, height=height)
    page.goto(server.url + "/", wait_until="load")
    box = page.get_by_role("textbox", name=INPUT_LABEL)
    box.wait_for()
    bottom = box.bounding_box()["y"] + box.bounding_box()["height"]
    assert bottom <= height, f"the input ends at {bottom} px"
    examples = page.locator("#chat button.example")
    assert examples.count() == 4
    assert sum(in_view(page, e) for e in examples.all()) >= 3
    assert page.locator("#about").evaluate("d => !d.open")  # the description opens on demand
    if width == 390:
        page.screenshot(path=str(ARTIFACTS / "chat-phone-first-screen.png"))
    examples.first.click()  # a suggestion asks its question
    page.locator("#chat .answer").first.wait_for(timeout=30_000)
    page.close()


# --- Copy (finding 6) -----------------------------------------------------------------------------


def test_copy_gives_plain_text_with_the_sources(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/", wait_until="load")
    ask_in(page, "บราซิลยุติการเจรจาอะไร")
    page.locator("#chat .message-buttons").last.locator("button[aria-label='Copy message']").click()
    page.wait_for_timeout(500)
    text = page.evaluate("navigator.clipboard.readText()")
    assert "<" not in text and "class=" not in text
    lines = text.splitlines()
    assert "FTAA" in lines[0] or "เขตการค้าเสรี" in lines[0]
    assert "แหล่งที่มา · Sources:" in lines
    sources = [line for line in lines if line.startswith("[")]
    assert len(sources) == 2 and sources[0].startswith("[1] การรวมกลุ่มในภูมิภาคของลาตินอเมริกา · ย่อหน้า")
    assert "latin-america-integration.th.txt" in sources[0] and "“" in sources[0]
    context.close()


# --- Widget on another site, by keyboard, restored (finding 3, 7, 8, 12) --------------------------


def test_widget_by_keyboard_on_another_site_keeps_its_conversation(server, browser, other_site):
    url = other_site("shop.html")  # no data-lang: auto
    page = new_page(browser)
    page.goto(url, wait_until="load")
    launcher = page.locator('[data-assistant="launcher"] button')
    panel = page.locator('[data-assistant="panel"] .panel')
    frame = page.frame_locator('[data-assistant="panel"] iframe')
    question = frame.locator("#question textarea")
    launcher.focus()
    page.keyboard.press("Enter")  # open: the input has the focus
    question.wait_for()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not question.evaluate("t => t === document.activeElement"):
        time.sleep(0.2)
    assert question.evaluate("t => t === document.activeElement")
    assert frame.locator("#chat button.example").count() == 4  # suggested questions in the widget too
    page.keyboard.type("Where is LAN Chile's South American hub?")
    page.keyboard.press("Enter")
    frame.locator("#chat .answer").first.wait_for(timeout=30_000)
    assert frame.locator("#chat .answer").first.get_attribute("lang") == "en"  # auto: the question's language
    # Tab never leaves the dialog, and every stop shows a focus ring.
    stops = set()
    for _ in range(16):
        page.keyboard.press("Tab")
        page.wait_for_timeout(100)
        assert page.evaluate("document.activeElement.dataset.assistant") == "panel"
        inner = page.evaluate("document.activeElement.shadowRoot.activeElement.className")
        stops.add(inner if inner != "" else frame.locator(":root").evaluate("() => document.activeElement.id"))
        ring = (
            page.evaluate("getComputedStyle(document.activeElement.shadowRoot.activeElement).outlineStyle")
            if inner != ""
            else frame.locator(":root").evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        )
        assert ring not in ("", "none"), (inner, ring)
    assert {"close", "ask", "clear"} <= stops  # around the dialog: the chat's controls and the close button
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert not panel.is_visible()
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "launcher"

    # The conversation is in the host page's storage, and comes back whole after a reload.
    assert "Lima" in page.evaluate("sessionStorage.getItem(Object.keys(sessionStorage)[0])")
    page.reload(wait_until="load")
    launcher.click()
    restored = frame.locator("#chat .answer").first
    restored.wait_for(timeout=20_000)
    restored.locator("a.cite").first.click()
    page.wait_for_timeout(300)
    assert restored.locator("details.citation").first.evaluate("d => d.open")
    assert frame.locator("#storage-note").count() == 0  # storage worked: nothing to say
    page.screenshot(path=str(ARTIFACTS / "widget-restored.png"))  # docs/widget.png is a copy
    page.close()


def test_widget_says_so_when_the_host_blocks_storage(server, browser, other_site):
    url = other_site("blocked.html", 'data-open="true"')
    page = new_page(browser)
    # The host page's storage refused (as a privacy mode may): the chat works and says it won't be kept.
    page.add_init_script(
        "Object.defineProperty(window, 'sessionStorage', {get() { throw new DOMException('no', 'SecurityError'); }})"
    )
    page.goto(url, wait_until="load")
    frame = page.frame_locator('[data-assistant="panel"] iframe')
    frame.locator("#storage-note").wait_for(timeout=20_000)
    assert "will not survive a reload" in frame.locator("#storage-note").inner_text()
    ask_in(frame, "What is ALBA?")
    page.close()


def test_embed_page_offers_copy_buttons_and_auto_language(server, browser):
    status, headers, _ = http("GET", server.url + "/api/ask")
    assert status == 405 and headers["allow"] == "POST"
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/embed", wait_until="load")
    snippet = page.locator("#widget-snippet").inner_text()
    assert "data-lang" not in snippet  # auto, the default: answers follow the question
    assert "height:600px" in page.locator("#iframe-snippet").inner_text()
    buttons = page.locator("button.copy")
    assert buttons.count() == 4
    buttons.first.click()
    page.wait_for_timeout(300)
    assert page.evaluate("navigator.clipboard.readText()") == snippet
    # The compact chat fits that height: its controls show whole in a 600 px frame.
    page.set_viewport_size({"width": 400, "height": 600})
    page.goto(server.url + "/compact/", wait_until="load")
    clear = page.locator("#clear")
    clear.wait_for()
    assert clear.bounding_box()["y"] + clear.bounding_box()["height"] <= 600
    context.close()


# --- Errors (finding 10) --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/compact/?embed=widget"])
def test_a_lost_server_is_said_in_both_languages_and_keeps_the_question(server, browser, path):
    page = new_page(browser)
    page.goto(server.url + path, wait_until="load")
    page.locator("#question textarea").wait_for()
    page.wait_for_timeout(2500)  # the conversation restored (the widget waits for its host, here absent)
    page.route("**/queue/join*", lambda route: route.abort())
    page.locator("#question textarea").fill("What is ALBA?")
    page.locator("#ask").click()
    note = page.locator("#offline")
    note.wait_for(timeout=20_000)
    assert "ติดต่อเซิร์ฟเวอร์ไม่ได้" in note.inner_text() and "Cannot reach the server" in note.inner_text()
    # Gradio reconnects by reloading the page; the question is back in the box, ready to send again.
    with page.expect_navigation(timeout=30_000):
        page.unroute("**/queue/join*")
    page.locator("#question textarea").wait_for()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and page.locator("#question textarea").input_value() != "What is ALBA?":
        time.sleep(0.3)
    page.wait_for_timeout(500)
    assert page.locator("#question textarea").input_value() == "What is ALBA?"
    page.locator("#ask").click()
    page.locator("#chat .answer").first.wait_for(timeout=30_000)
    assert page.locator("#offline").count() == 0
    page.close()


# --- Contrast (finding 4, 11, 13) -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_in_light_and_dark(server, browser, scheme):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    page.goto(server.url + "/", wait_until="load")
    ask_in(page, "บราซิลยุติการเจรจาอะไร")
    ask_in(page, "ALBA มีสมาชิกกี่ประเทศ")
    ask_in(page, "สูตรต้มยำกุ้งทำอย่างไร")
    page.locator("#chat .answer").first.locator("a.cite").first.click()
    page.wait_for_timeout(300)
    assert page.evaluate("document.querySelector('.dark') !== null") == (scheme == "dark")
    checked = {
        "highlighted quote": "#chat .answer details.citation[open] .quote mark",
        "source label": "#chat .answer details.citation .label",
        "citation link": "#chat .answer a.cite",
        "footnote mark": "#chat .answer sup.fn",
        "footnote mark in a quote": "#chat .answer details.citation[open] .quote mark sup.fn",
        "not found": "#chat .answer .notfound",
        "uncertain": "#chat .answer .caveat",
        "suggestion": "#chat .answer button.suggest",
        "way back": "#chat .answer details.citation[open] a.back",
        "answer": "#chat .answer .text",
    }
    ratios = {name: page.locator(selector).first.evaluate(CONTRAST_JS) for name, selector in checked.items()}
    assert all(r >= 4.5 for r in ratios.values()), ratios
    # Footnote marks are not citation links: smaller, not underlined, another colour.
    fn, cite = page.locator("#chat .answer sup.fn").first, page.locator("#chat .answer a.cite").first
    style = "e => { const s = getComputedStyle(e); return [parseFloat(s.fontSize), s.color, s.textDecorationLine]; }"
    (fn_size, fn_color, fn_line), (cite_size, cite_color, cite_line) = fn.evaluate(style), cite.evaluate(style)
    assert fn_size < cite_size and fn_color != cite_color and fn_line == "none" and cite_line == "underline"
    page.screenshot(path=str(ARTIFACTS / f"chat-{scheme}.png"))  # docs/chat.png, docs/chat-dark.png
    context.close()


# --- Accessibility (finding 8, 11) ----------------------------------------------------------------


def _axe(page) -> list[dict]:
    """axe-core's serious and critical violations on the page and in its frames."""
    for frame in page.frames:
        frame.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_problems(server, browser, other_site):
    found = {}
    for path in ("/", "/compact/"):
        page = new_page(browser)
        page.goto(server.url + path, wait_until="load")
        ask_in(page, "บราซิลยุติการเจรจาอะไร")
        page.locator("#chat .answer a.cite").first.click()
        assert page.evaluate("document.documentElement.lang") == "th"
        assert page.get_by_role("textbox", name=INPUT_LABEL).count() == 1
        assert page.locator("#chat [data-testid=user] [lang=th]").count() == 1  # each message says its language
        assert page.locator("button[aria-label='']").count() == 0  # no unnamed icon (the share button is gone)
        found[path] = _axe(page)
        page.close()
    page = new_page(browser)
    page.goto(server.url + "/embed?open=true", wait_until="load")
    page.frame_locator('[data-assistant="panel"] iframe').locator("#question textarea").wait_for()
    found["/embed"] = _axe(page)
    page.close()
    page = new_page(browser)
    page.goto(other_site("open.html", 'data-open="true"'), wait_until="load")
    frame = page.frame_locator('[data-assistant="panel"] iframe')
    ask_in(frame, "What is ALBA?")
    found["widget"] = _axe(page)
    page.close()
    assert found == {"/": [], "/compact/": [], "/embed": [], "widget": []}
