// The live feed of one likestream server: one WebSocket for everything a page follows
// (the union of the items its parts watch, and one trending window), reconnecting with
// capped, jittered backoff and subscribing again on every new connection.
//
// Events (an EventTarget): "likes" {item, likes}, "trending" {window, items},
// "state" {state: "connecting" | "live" | "reconnecting"}, "error" {code, message}.

const MAX_ITEMS_PER_FRAME = 100;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;

export class Feed extends EventTarget {
  #url;
  #watchers = new Map(); // item -> how many parts of the page watch it
  #subscribed = new Set(); // items subscribed on the current connection
  #window = null;
  #ws = null;
  #timer = null;
  #attempt = 0;
  #flushing = false;
  #state = "connecting";

  // `endpoint`: the server's base URL (http or https); the feed is its /ws.
  constructor(endpoint) {
    super();
    const url = new URL("ws", endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.#url = url.href;
  }

  get state() {
    return this.#state;
  }

  // Follow an item's count; every watch is matched by one unwatch. Changes made in one
  // task go out as one frame, so a page of buttons subscribes at once.
  watch(item) {
    this.#watchers.set(item, (this.#watchers.get(item) ?? 0) + 1);
    this.#changed();
  }

  unwatch(item) {
    const left = (this.#watchers.get(item) ?? 0) - 1;
    if (left > 0) this.#watchers.set(item, left);
    else this.#watchers.delete(item);
    this.#changed();
  }

  // Follow the top items of a window instead of the one followed so far (null: none).
  trending(window, limit = 10) {
    const open = this.#open();
    if (open && this.#window !== null) {
      this.#send({ op: "unsubscribe_trending", window: this.#window.window });
    }
    this.#window = window === null ? null : { window, limit };
    if (open && this.#window !== null) this.#send({ op: "subscribe_trending", ...this.#window });
    this.#changed();
  }

  #wanted() {
    return this.#watchers.size > 0 || this.#window !== null;
  }

  #open() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  #send(frame) {
    this.#ws.send(JSON.stringify(frame));
  }

  #changed() {
    if (!this.#wanted()) {
      this.#stop();
    } else if (this.#ws === null && this.#timer === null) {
      this.#connect();
    } else if (this.#open() && !this.#flushing) {
      this.#flushing = true;
      queueMicrotask(() => {
        this.#flushing = false;
        if (this.#open()) this.#sync();
      });
    }
  }

  // Bring the connection's subscriptions to what the page watches now.
  #sync() {
    const gone = [...this.#subscribed].filter((item) => !this.#watchers.has(item));
    const added = [...this.#watchers.keys()].filter((item) => !this.#subscribed.has(item));
    for (const [op, items] of [
      ["unsubscribe", gone],
      ["subscribe", added],
    ]) {
      for (let i = 0; i < items.length; i += MAX_ITEMS_PER_FRAME) {
        this.#send({ op, items: items.slice(i, i + MAX_ITEMS_PER_FRAME) });
      }
    }
    for (const item of gone) this.#subscribed.delete(item);
    for (const item of added) this.#subscribed.add(item);
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  #stop() {
    clearTimeout(this.#timer);
    this.#timer = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws !== null) ws.close(1000);
    this.#setState("connecting"); // again, once something is watched
  }

  #connect() {
    this.#timer = null;
    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    ws.addEventListener("open", () => {
      if (this.#ws !== ws) return;
      this.#setState("live");
      // A new connection has nothing: subscribe again (the server sends current counts
      // first, so the page catches up on what changed while it was away).
      this.#subscribed.clear();
      this.#sync();
      if (this.#window !== null) this.#send({ op: "subscribe_trending", ...this.#window });
    });
    ws.addEventListener("message", (event) => {
      // Only a connection that delivered something counts as a success: a server that
      // takes connections and closes them at once (1013: full) keeps the backoff growing.
      this.#attempt = 0;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "likes") {
        this.dispatchEvent(
          new CustomEvent("likes", { detail: { item: frame.item_id, likes: frame.likes } }),
        );
      } else if (frame.type === "trending") {
        const detail = { window: frame.window, items: frame.items };
        this.dispatchEvent(new CustomEvent("trending", { detail }));
      } else if (frame.type === "error") {
        console.warn("likestream feed:", frame.code, frame.message);
        const detail = { code: frame.code, message: frame.message };
        this.dispatchEvent(new CustomEvent("error", { detail }));
      }
    });
    ws.addEventListener("close", () => {
      if (this.#ws !== ws) return; // stopped on purpose
      this.#ws = null;
      this.#setState("reconnecting");
      // Exponential backoff with jitter, capped, so a restarted server is not stampeded.
      const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.#attempt);
      this.#attempt += 1;
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.#timer = setTimeout(() => this.#connect(), delay);
    });
  }
}
