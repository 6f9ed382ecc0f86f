/* The assistant's chat widget: one <script src=".../widget.js" data-…> tag adds a launcher button to the
 * page that opens the compact chat (/compact/, an iframe) in a panel.
 *
 * The page gets two elements of ours, <div data-assistant="launcher"> and <div data-assistant="panel">,
 * each with an open shadow root, so the page's CSS cannot reach inside and ours cannot leak out. Every
 * data- option is checked here; text goes in through textContent only. */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.src) return;
  // A page that includes the tag twice gets one widget.
  if (document.querySelector('[data-assistant="launcher"]')) return;

  var base = new URL("./", script.src);
  var LABELS = {
    auto: {title: "ผู้ช่วยค้นคว้า · Research assistant", open: "เปิดแชท · Open the chat", close: "ปิด · Close",
           greeting: "ถามเป็นภาษาไทยหรืออังกฤษ ทุกคำตอบอ้างอิงเอกสาร · Ask in Thai or English; every answer cites the documents."},
    th: {title: "ผู้ช่วยค้นคว้า", open: "เปิดแชทผู้ช่วยค้นคว้า", close: "ปิดแชท",
         greeting: "ถามเรื่องการรวมกลุ่มในภูมิภาคลาตินอเมริกาได้เลย ทุกคำตอบอ้างอิงเอกสาร"},
    en: {title: "Research assistant", open: "Open the research assistant chat", close: "Close the chat",
         greeting: "Ask about regional integration in Latin America; every answer cites the documents."}
  };

  function option(name) {
    var value = script.getAttribute("data-" + name);
    return value === null ? "" : String(value).trim();
  }

  function text(value, max, fallback) {
    // Control characters out, length capped; it only ever reaches textContent and attributes.
    value = value.replace(/[\u0000-\u001f\u007f]/g, " ").trim();
    return value ? value.slice(0, max) : fallback;
  }

  // auto (the default): both languages on the labels, and each answer in its question's language.
  var lang = option("lang") === "en" || option("lang") === "th" ? option("lang") : "auto";
  var labels = LABELS[lang];
  var title = text(option("title"), 80, labels.title);
  var greeting = text(option("greeting"), 300, labels.greeting);
  var position = option("position") === "bottom-left" ? "left" : "right";
  var color = option("color");
  if (!color || !(window.CSS && CSS.supports("color", color)) || /[;{}<>]/.test(color)) color = "#1f6feb";
  var height = parseInt(option("height"), 10);
  height = /^\d{3,4}(px)?$/.test(option("height")) && height >= 320 && height <= 1000 ? height : 600;
  var startOpen = /^(true|1|yes|open)$/i.test(option("open"));

  var STYLE = [
    ":host{all:initial !important;display:block !important;position:static !important}",
    "*{box-sizing:border-box}",
    ".launcher{position:fixed;bottom:20px;" + position + ":20px;z-index:2147483000;width:56px;height:56px;",
    "  border:0;border-radius:50%;background:var(--c);color:#fff;cursor:pointer;display:flex;align-items:center;",
    "  justify-content:center;box-shadow:0 4px 14px rgba(0,0,0,.25);padding:0;margin:0}",
    ".launcher:focus-visible,.close:focus-visible{outline:3px solid #ffbf47;outline-offset:2px}",
    ".launcher svg{width:28px;height:28px;fill:currentColor}",
    ".panel{position:fixed;bottom:88px;" + position + ":20px;z-index:2147483001;width:400px;",
    "  height:min(var(--h),calc(100vh - 108px));max-width:calc(100vw - 40px);display:flex;flex-direction:column;",
    "  background:#fff;color:#222;border-radius:12px;overflow:hidden;box-shadow:0 8px 30px rgba(0,0,0,.3);",
    "  font:15px/1.4 'Noto Sans Thai','Loma','Garuda',system-ui,sans-serif}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:8px;padding:10px 12px;background:var(--c);color:#fff}",
    "h2{flex:1;margin:0;font:inherit;font-weight:700;font-size:16px;overflow:hidden;text-overflow:ellipsis;",
    "  white-space:nowrap}",
    ".close{border:0;background:transparent;color:inherit;font:inherit;font-size:22px;line-height:1;",
    "  width:36px;height:36px;border-radius:6px;cursor:pointer}",
    ".greeting{margin:0;padding:8px 12px;font-size:14px;background:#f4f6f8;border-bottom:1px solid #e3e6ea}",
    "iframe{flex:1;width:100%;border:0;display:block;background:#fff}",
    // Phones: the panel takes the whole screen, and the launcher steps aside while it is open.
    "@media (max-width:600px){.panel{inset:0;width:100%;max-width:none;height:100%;border-radius:0}",
    "  .launcher[aria-expanded=true]{display:none}}"
  ].join("\n");

  function host(kind) {
    var element = document.createElement("div");
    element.setAttribute("data-assistant", kind);
    var root = element.attachShadow({mode: "open"});
    var style = document.createElement("style");
    style.textContent = STYLE;
    root.appendChild(style);
    return {element: element, root: root};
  }

  function icon() {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2zm3 6v2h10V9H7zm0-3v2h10V6H7zm0 6v2h7v-2H7z");
    svg.appendChild(path);
    return svg;
  }

  var outer = host("launcher");
  var launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("aria-label", labels.open + ": " + title);
  launcher.setAttribute("aria-expanded", "false");
  launcher.style.setProperty("--c", color);
  launcher.appendChild(icon());
  outer.root.appendChild(launcher);

  var shell = host("panel");
  var panel = document.createElement("div");
  panel.className = "panel";
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", title);
  panel.setAttribute("lang", lang === "en" ? "en" : "th");
  panel.setAttribute("aria-modal", "true");
  panel.style.setProperty("--c", color);
  panel.style.setProperty("--h", height + "px");
  var header = document.createElement("header");
  var heading = document.createElement("h2");
  heading.textContent = title;
  var close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.setAttribute("aria-label", labels.close);
  close.textContent = "\u00d7";
  header.appendChild(heading);
  header.appendChild(close);
  var hello = document.createElement("p");
  hello.className = "greeting";
  hello.textContent = greeting;
  panel.appendChild(header);
  panel.appendChild(hello);
  shell.root.appendChild(panel);

  var frame = null;
  var ready = false;  // the chat in the frame has asked for its conversation: it can take focus
  var wantsFocus = false;

  function focusChat(where) {
    if (!frame) return;
    frame.focus();
    // A moment after the frame itself takes focus, or the frame's document keeps it on its body.
    if (ready) {
      setTimeout(function () {
        frame.contentWindow.postMessage({assistant: "focus", where: where || "input"}, base.origin);
      }, 30);
    } else wantsFocus = true;
  }

  function show(focus) {
    if (!frame) {  // loaded on first open, so pages that never open the chat load nothing more
      frame = document.createElement("iframe");
      frame.title = title;
      frame.setAttribute("allow", "clipboard-write");
      frame.src = new URL("compact/?embed=widget" + (lang === "auto" ? "" : "&lang=" + lang), base).href;
      panel.appendChild(frame);
    }
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    if (focus !== false) focusChat("input");
  }

  function hide() {
    if (panel.hidden) return;
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  launcher.addEventListener("click", function () {
    if (panel.hidden) show(); else hide();
  });
  close.addEventListener("click", hide);
  [shell.root, outer.root].forEach(function (root) {
    root.addEventListener("keydown", function (event) {
      if (event.key === "Escape") hide();
    });
  });
  // Focus stays in the dialog: Tab from the close button enters the chat, and the chat hands Tab past
  // either of its ends back here (see CLIENT_JS in web.py).
  close.addEventListener("keydown", function (event) {
    if (event.key !== "Tab") return;
    event.preventDefault();
    focusChat(event.shiftKey ? "last" : "input");
  });

  // The conversation is kept in this page's sessionStorage: the chat's frame is a third-party context,
  // where the browser refuses it storage.
  var KEY = "assistant:widget:" + base.href;

  function stored() {
    try { return {value: window.sessionStorage.getItem(KEY) || "", blocked: false}; }
    catch (e) { return {value: "", blocked: true}; }
  }

  // Messages from the chat: Esc (its key presses never reach this page), Tab out, storage.
  window.addEventListener("message", function (event) {
    if (!frame || event.source !== frame.contentWindow || event.origin !== base.origin || !event.data) return;
    var data = event.data;
    if (data.assistant === "close") hide();
    else if (data.assistant === "tab-out") close.focus();
    else if (data.assistant === "load") {
      var kept = stored();
      frame.contentWindow.postMessage({assistant: "stored", value: kept.value, blocked: kept.blocked}, base.origin);
      ready = true;
      if (wantsFocus && !panel.hidden) { wantsFocus = false; setTimeout(function () { focusChat("input"); }, 300); }
    } else if (data.assistant === "save" && typeof data.value === "string") {
      try {
        if (data.value) window.sessionStorage.setItem(KEY, data.value); else window.sessionStorage.removeItem(KEY);
      } catch (e) { /* the chat already said that storage is blocked */ }
    }
  });

  function mount() {
    document.body.appendChild(outer.element);
    document.body.appendChild(shell.element);
    if (startOpen) show(false);  // no focus taken from the page on load
  }

  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
