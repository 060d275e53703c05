// The demo page: like buttons with live counters.
import { devToken, isLiked, setLiked } from "./api.js";
import { Feed } from "./feed.js";

const DEFAULT_ITEMS = ["post:1", "post:2", "post:3", "post:4", "post:5"];
const THROTTLE_MS = 400; // at most one click per item this often
const ID = /^[A-Za-z0-9._:@-]{1,128}$/;

const state = { user: null, token: null, items: new Map() };

function pageItems() {
  const asked = new URLSearchParams(location.search).get("items");
  const items = asked ? asked.split(",").filter((i) => ID.test(i)) : [];
  return items.length ? [...new Set(items)] : DEFAULT_ITEMS;
}

function say(text) {
  document.getElementById("message").textContent = text;
}

function render(entry) {
  const shown = entry.server === null ? null : entry.server + entry.delta;
  entry.count.textContent = shown === null ? "–" : String(Math.max(0, shown));
  entry.button.setAttribute("aria-pressed", String(entry.liked));
  entry.button.querySelector(".label").textContent = entry.liked ? "Liked" : "Like";
  entry.button.dataset.pending = String(entry.pending);
  entry.button.disabled = state.token === null;
}

function addItem(list, template, itemId) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.item = itemId;
  node.querySelector(".name").textContent = itemId;
  const entry = {
    id: itemId,
    server: null, // last count pushed by the server
    delta: 0, // optimistic change not yet seen in a push
    liked: false,
    pending: false,
    pushedWhilePending: false,
    lastClick: -Infinity,
    button: node.querySelector(".like"),
    count: node.querySelector(".count"),
  };
  entry.button.setAttribute("aria-label", `Like ${itemId}`);
  entry.button.addEventListener("click", () => toggle(entry));
  state.items.set(itemId, entry);
  list.append(node);
  render(entry);
}

async function toggle(entry) {
  const now = performance.now();
  if (state.token === null || entry.pending || now - entry.lastClick < THROTTLE_MS) return;
  entry.lastClick = now;
  const before = { liked: entry.liked, delta: entry.delta };
  entry.liked = !entry.liked; // optimistic: show it at once
  entry.delta += entry.liked ? 1 : -1;
  entry.pending = true;
  entry.pushedWhilePending = false;
  render(entry);
  try {
    await setLiked(state.token, entry.id, entry.liked);
    // A push that came while the write was in flight may already count it: from here
    // on the server's count is the truth (at worst it lags by one push).
    if (entry.pushedWhilePending) entry.delta = 0;
    say("");
  } catch (error) {
    Object.assign(entry, before); // roll back
    say(`Could not ${entry.liked ? "unlike" : "like"} ${entry.id}: ${error.message}`);
    if (error.status === 401) signOut();
  } finally {
    entry.pending = false;
    render(entry);
  }
}

function onCount(itemId, likes) {
  const entry = state.items.get(itemId);
  if (!entry) return;
  entry.server = likes;
  if (entry.pending) entry.pushedWhilePending = true;
  else entry.delta = 0; // the first push after our write went through is the truth
  render(entry);
}

function onConnection(status) {
  const node = document.getElementById("connection");
  node.dataset.state = status;
  node.textContent = status === "live" ? "live" : "reconnecting…";
}

function signOut() {
  state.token = null;
  state.user = null;
  document.getElementById("who").textContent = "Your session expired: sign in again.";
  for (const entry of state.items.values()) render(entry);
}

async function signIn(event) {
  event.preventDefault();
  const user = document.getElementById("user").value.trim();
  try {
    const minted = await devToken(user);
    state.user = minted.user_id;
    state.token = minted.token;
    document.getElementById("who").textContent = `Signed in as ${minted.user_id}.`;
    say("");
  } catch (error) {
    say(error.status === 404 ? "Sign-in is only available in development." : error.message);
    return;
  }
  await Promise.all(
    [...state.items.values()].map(async (entry) => {
      const liked = await isLiked(state.token, entry.id, state.user);
      if (liked !== null && !entry.pending) entry.liked = liked;
      render(entry);
    }),
  );
  document.body.dataset.signedIn = "true";
}

// The trending panel: the top items of the chosen window, as the server pushes them.
function onTrending(window, items) {
  const panel = document.getElementById("trending");
  if (panel.dataset.window !== window) return; // a frame of the window we just left
  const list = document.getElementById("trending-items");
  list.replaceChildren(
    ...items.map(({ item_id: itemId, likes }) => {
      const li = document.createElement("li");
      li.dataset.item = itemId;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = itemId;
      const gained = document.createElement("span");
      gained.className = "gained";
      gained.textContent = `+${likes}`;
      li.append(name, gained);
      return li;
    }),
  );
}

function showWindow(feed, window) {
  document.getElementById("trending").dataset.window = window;
  for (const button of document.querySelectorAll("#trending .windows button")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === window));
  }
  document.getElementById("trending-items").replaceChildren();
  feed.trending(window);
}

function main() {
  const list = document.getElementById("items");
  const template = document.getElementById("item-template");
  const items = pageItems();
  for (const itemId of items) addItem(list, template, itemId);
  document.getElementById("signin").addEventListener("submit", signIn);
  const feed = new Feed(items, onCount, onConnection, onTrending);
  for (const button of document.querySelectorAll("#trending .windows button")) {
    button.addEventListener("click", () => showWindow(feed, button.dataset.window));
  }
  showWindow(feed, "1h");
  feed.start();
}

main();
