// The live feed: one WebSocket, every item subscribed (and one trending window),
// reconnect with backoff.

const MAX_ITEMS_PER_FRAME = 100;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;

export class Feed {
  #items;
  #onCount;
  #onState;
  #onTrending;
  #attempt = 0;
  #ws = null;
  #window = null;

  constructor(items, onCount, onState, onTrending = () => {}) {
    this.#items = items;
    this.#onCount = onCount;
    this.#onState = onState;
    this.#onTrending = onTrending;
  }

  // Follow the top items of another window (one at a time); survives reconnections.
  trending(window, limit = 10) {
    const open = this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
    if (open && this.#window !== null) {
      this.#ws.send(JSON.stringify({ op: "unsubscribe_trending", window: this.#window.window }));
    }
    this.#window = { window, limit };
    if (open) this.#ws.send(JSON.stringify({ op: "subscribe_trending", ...this.#window }));
  }

  start() {
    this.#connect();
  }

  #connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.#ws = ws;
    ws.addEventListener("open", () => {
      this.#attempt = 0;
      this.#onState("live");
      // Every (re)connection subscribes again: the server sends current counts first.
      for (let i = 0; i < this.#items.length; i += MAX_ITEMS_PER_FRAME) {
        const items = this.#items.slice(i, i + MAX_ITEMS_PER_FRAME);
        ws.send(JSON.stringify({ op: "subscribe", items }));
      }
      if (this.#window !== null) {
        ws.send(JSON.stringify({ op: "subscribe_trending", ...this.#window }));
      }
    });
    ws.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "likes") this.#onCount(frame.item_id, frame.likes);
      else if (frame.type === "trending") this.#onTrending(frame.window, frame.items);
      else if (frame.type === "error") console.warn("feed:", frame.code, frame.message);
    });
    ws.addEventListener("close", () => {
      this.#onState("reconnecting");
      // Exponential backoff with jitter, so a restarted worker is not stampeded.
      const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.#attempt);
      this.#attempt += 1;
      setTimeout(() => this.#connect(), ceiling / 2 + Math.random() * (ceiling / 2));
    });
  }
}
