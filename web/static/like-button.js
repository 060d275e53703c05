// <like-button item="post:9"></like-button>: a like button with a live count, for any site.
//
//   <script type="module" src="https://likes.example/static/like-button.js"></script>
//   <like-button item="post:9"></like-button>
//   <script type="module">
//     import { LikeButton } from "https://likes.example/static/like-button.js";
//     LikeButton.setToken(token); // the signed-in user's likestream token; null: signed out
//   </script>
//
// The server is the one this module came from, unless the element's `endpoint` attribute
// or LikeButton.configure({ endpoint }) names another. A page of another origin must be
// in the server's LIKESTREAM_CORS_ORIGINS.
//
// All buttons of a page share one WebSocket per server and one state per item. A click
// shows at once (optimistic) and is rolled back if the server refuses it; the button then
// fires `like-error` (bubbles, composed) with detail {item, liked, status, code, message,
// retryAfter}: status 0 means no answer, 401 also comes without a token. Clicks on an
// item while its write is in flight or within MIN_INTERVAL_MS of the last are ignored,
// and after a 429 or 503 with Retry-After no write goes out before that time.
//
// Styling: CSS custom properties (--like-button-color and those in CSS below), parts
// (button, icon, label, count), custom states (:state(pressed), :state(pending)); the
// default slot replaces the label ("Like"), the "icon" slot the heart.

import { ApiError, isLiked, likesOf, setLiked } from "./api.js";
import { Feed } from "./feed.js";

const ID = /^[A-Za-z0-9._:@-]{1,128}$/;
const MIN_INTERVAL_MS = 400;
// A write that changed nothing (already liked in another tab), or whose count was pushed
// while it was answered, brings no push after it: after this long without one, the
// count is read instead of waiting for the next change.
const SETTLE_MS = 3000;

const CSS = `
:host {
  display: inline-block;
  vertical-align: middle;
}
:host([hidden]) { display: none; }
button {
  display: inline-flex;
  align-items: center;
  gap: var(--like-button-gap, 0.35em);
  font: inherit;
  line-height: 1.2;
  padding: var(--like-button-padding, 0.35em 0.75em);
  border: 1px solid var(--like-button-border-color, #bbb);
  border-radius: var(--like-button-radius, 999px);
  background: var(--like-button-background, white);
  color: var(--like-button-text-color, inherit);
  cursor: pointer;
}
button[aria-pressed="true"] {
  border-color: var(--like-button-color, #e0245e);
  background: var(
    --like-button-pressed-background,
    color-mix(in srgb, var(--like-button-color, #e0245e) 12%, white)
  );
  color: var(--like-button-pressed-text-color, inherit);
}
button[data-pending="true"] { cursor: progress; }
button:focus-visible {
  outline: 2px solid var(--like-button-focus-color, var(--like-button-color, #e0245e));
  outline-offset: 2px;
}
button:disabled { cursor: not-allowed; opacity: 0.5; }
.icon { color: var(--like-button-color, #e0245e); }
.count { font-variant-numeric: tabular-nums; }
.count:empty { display: none; }
`;

let sheet = null;

function styles() {
  if (sheet === null) {
    // A constructed sheet: shared by every button, and no inline <style> for the host
    // page's Content-Security-Policy to refuse.
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}

const config = { endpoint: new URL("../", import.meta.url).href };
const auth = { token: null, user: null, version: 0 };
const servers = new Map(); // endpoint URL -> Server
const buttons = new Set(); // connected <like-button> elements

function endpointOf(value) {
  const url = new URL(value, document.baseURI);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url.href;
}

function serverOf(endpoint) {
  let server = servers.get(endpoint);
  if (server === undefined) {
    server = new Server(endpoint);
    servers.set(endpoint, server);
  }
  return server;
}

// The user a token is for: its JWT subject (read, not verified: the server verifies).
function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const sub = JSON.parse(atob(payload)).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}

// One likestream server as this page sees it: its feed, and the state of each item
// shown, shared by all the buttons of that item.
class Server {
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.feed = new Feed(endpoint);
    this.items = new Map();
    // After a refusal with Retry-After: no write before this time (performance.now()).
    this.blocked = { until: 0, status: 0, code: "" };
    this.feed.addEventListener("likes", ({ detail }) => {
      this.items.get(detail.item)?.pushed(detail.likes);
    });
  }

  attach(itemId, button) {
    let entry = this.items.get(itemId);
    if (entry === undefined) {
      entry = new Entry(this, itemId);
      this.items.set(itemId, entry);
      this.feed.watch(itemId);
      entry.readMembership();
    }
    entry.buttons.add(button);
    return entry;
  }

  detach(entry, button) {
    entry.buttons.delete(button);
    if (entry.buttons.size === 0 && this.items.get(entry.id) === entry) {
      this.items.delete(entry.id);
      this.feed.unwatch(entry.id);
    }
  }
}

class Entry {
  constructor(server, id) {
    this.server = server;
    this.id = id;
    this.buttons = new Set();
    this.count = null; // the last count pushed by the server
    this.delta = 0; // our optimistic change not yet seen in a push
    this.liked = false;
    this.writing = false;
    this.reading = false; // what the user likes is being read
    this.cooling = false; // within MIN_INTERVAL_MS of the last click
    this.pushes = 0;
    this.pushesAtWrite = 0;
  }

  // Takes no click now.
  get pending() {
    return this.writing || this.reading || this.cooling;
  }

  render() {
    for (const button of this.buttons) button.render(this);
  }

  pushed(likes) {
    this.count = likes;
    this.pushes += 1;
    // The first push after our write was answered is the truth.
    if (!this.writing) this.delta = 0;
    this.render();
  }

  async readMembership() {
    const { token, user, version } = auth;
    if (token === null || user === null) {
      this.reading = false;
      if (!this.writing) this.liked = false;
      this.render();
      return;
    }
    this.reading = true;
    this.render();
    const liked = await isLiked(this.server.endpoint, token, this.id, user);
    if (auth.version !== version) return; // signed in as someone else since: theirs counts
    this.reading = false;
    if (liked !== null && !this.writing) this.liked = liked;
    this.render();
  }

  async toggle(origin) {
    const now = performance.now();
    if (this.pending) return; // throttled: one write at a time, and not too often
    this.cooling = true;
    setTimeout(() => {
      this.cooling = false;
      this.render();
    }, MIN_INTERVAL_MS);
    const wanted = !this.liked;
    if (auth.token === null) {
      origin.refused(this, wanted, new ApiError(401, "unauthorized", "sign in to like"));
      this.render();
      return;
    }
    const { until, status, code } = this.server.blocked;
    if (until > now) {
      const seconds = Math.ceil((until - now) / 1000);
      const error = new ApiError(status, code, `retry in ${seconds}s`, seconds);
      origin.refused(this, wanted, error);
      this.render();
      return;
    }
    const before = { liked: this.liked, delta: this.delta };
    this.liked = wanted; // optimistic: shown at once
    this.delta += wanted ? 1 : -1;
    this.writing = true;
    this.pushesAtWrite = this.pushes;
    this.render();
    try {
      await setLiked(this.server.endpoint, auth.token, this.id, wanted);
      // Shown until the next push: one during the write most likely predates the event
      // being counted (202 comes when Kafka has it, the count a fold and a push later).
      this.#settleLater(this.pushes);
    } catch (error) {
      const refusal =
        error instanceof ApiError ? error : new ApiError(0, "network", String(error));
      // Rolled back. A push during the write holds any earlier write of ours, not this one.
      this.liked = before.liked;
      this.delta = this.pushes === this.pushesAtWrite ? before.delta : 0;
      if (refusal.retryAfter !== null && (refusal.status === 429 || refusal.status === 503)) {
        // The limit is the user's, not the item's: the whole page waits.
        const until = performance.now() + refusal.retryAfter * 1000;
        this.server.blocked = { until, status: refusal.status, code: refusal.code };
      }
      origin.refused(this, wanted, refusal);
    } finally {
      this.writing = false;
      this.render();
    }
  }

  #settleLater(pushes) {
    setTimeout(async () => {
      if (this.pushes !== pushes || this.writing || this.delta === 0) return;
      const likes = await likesOf(this.server.endpoint, this.id);
      if (likes === null || this.pushes !== pushes || this.writing) return;
      this.count = likes;
      this.delta = 0;
      this.render();
    }, SETTLE_MS);
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

export class LikeButton extends HTMLElement {
  static observedAttributes = ["item", "endpoint"];

  // The signed-in user's token for every button of the page (null: signed out); `user`
  // defaults to the token's subject. A new token of the same user keeps what is shown.
  static setToken(token, user = undefined) {
    const who = token ? (user ?? subjectOf(token)) : null;
    const sameUser = Boolean(token) && auth.token !== null && who === auth.user;
    auth.token = token || null;
    auth.user = who;
    if (sameUser) return;
    auth.version += 1;
    for (const server of servers.values()) {
      for (const entry of server.items.values()) entry.readMembership();
    }
  }

  // Page-wide settings: `endpoint`, the server of buttons without an endpoint attribute.
  static configure({ endpoint } = {}) {
    if (endpoint !== undefined) {
      config.endpoint = endpointOf(endpoint);
      for (const button of buttons) button.#attach();
    }
  }

  // The page's live feed of a server (default: the configured one), for pages that show
  // more of it (connection state, trending) without a second WebSocket.
  static feed(endpoint = undefined) {
    return serverOf(endpoint === undefined ? config.endpoint : endpointOf(endpoint)).feed;
  }

  #internals = this.attachInternals();
  #button;
  #icon;
  #count;
  #entry = null;
  #server = null;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = [styles()];
    this.#icon = element("span", { class: "heart" }, "♡");
    this.#count = element("span", { class: "count", part: "count" });
    // The accessible name is the button's text, icon left out ("Like 12"): what the
    // visible label says, so voice control users can say it (WCAG 2.5.3). No live region:
    // counts change too often to be announced.
    this.#button = element(
      "button",
      { type: "button", part: "button", "aria-pressed": "false", "data-pending": "false" },
      element(
        "span",
        { class: "icon", part: "icon", "aria-hidden": "true" },
        element("slot", { name: "icon" }, this.#icon),
      ),
      element("span", { class: "label", part: "label" }, element("slot", {}, "Like")),
      " ",
      this.#count,
    );
    this.#button.addEventListener("click", () => this.#entry?.toggle(this));
    root.append(this.#button);
  }

  get item() {
    return this.getAttribute("item");
  }

  set item(value) {
    this.setAttribute("item", value);
  }

  connectedCallback() {
    buttons.add(this);
    this.#attach();
  }

  disconnectedCallback() {
    buttons.delete(this);
    this.#detach();
  }

  attributeChangedCallback() {
    if (buttons.has(this)) this.#attach();
  }

  #attach() {
    const item = this.item;
    const endpoint = this.getAttribute("endpoint");
    const server = serverOf(endpoint === null ? config.endpoint : endpointOf(endpoint));
    if (this.#entry !== null && this.#server === server && this.#entry.id === item) return;
    this.#detach();
    if (item === null || !ID.test(item)) {
      console.warn("like-button: item must be 1-128 of [A-Za-z0-9._:@-], got", item);
      this.#button.disabled = true;
      return;
    }
    this.#button.disabled = false;
    this.#server = server;
    this.#entry = server.attach(item, this);
    this.render(this.#entry);
  }

  #detach() {
    if (this.#entry !== null) this.#server.detach(this.#entry, this);
    this.#entry = null;
    this.#server = null;
  }

  // Called by the item's shared state whenever it changes.
  render(entry) {
    // Only what changed is written: assistive technology hears of every DOM change.
    const shown = entry.count === null ? "" : String(Math.max(0, entry.count + entry.delta));
    if (this.#count.textContent !== shown) this.#count.textContent = shown;
    const pressed = String(entry.liked);
    if (this.#button.getAttribute("aria-pressed") !== pressed) {
      this.#button.setAttribute("aria-pressed", pressed);
      this.#icon.textContent = entry.liked ? "♥" : "♡";
    }
    const pending = String(entry.pending);
    if (this.#button.dataset.pending !== pending) this.#button.dataset.pending = pending;
    this.#state("pressed", entry.liked);
    this.#state("pending", entry.pending);
  }

  #state(name, on) {
    try {
      if (on) this.#internals.states.add(name);
      else this.#internals.states.delete(name);
    } catch {
      // custom states not supported: the attributes of ::part(button) still say it
    }
  }

  // A refused click, after its rollback: tell the host page.
  refused(entry, liked, error) {
    const detail = {
      item: entry.id,
      liked,
      status: error.status,
      code: error.code,
      message: error.message,
      retryAfter: error.retryAfter,
    };
    this.dispatchEvent(new CustomEvent("like-error", { bubbles: true, composed: true, detail }));
  }
}

if (customElements.get("like-button") === undefined) {
  customElements.define("like-button", LikeButton);
}
