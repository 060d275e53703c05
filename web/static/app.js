// The demo page: <like-button> elements with live counts, dev sign-in, trending.
import { devToken } from "./api.js";
import { LikeButton } from "./like-button.js";

const DEFAULT_ITEMS = ["post:1", "post:2", "post:3", "post:4", "post:5"];
const ID = /^[A-Za-z0-9._:@-]{1,128}$/;
const API = new URL("/", location.href).href;

function pageItems() {
  const asked = new URLSearchParams(location.search).get("items");
  const items = asked ? asked.split(",").filter((i) => ID.test(i)) : [];
  return items.length ? [...new Set(items)] : DEFAULT_ITEMS;
}

function say(text) {
  document.getElementById("message").textContent = text;
}

function addItem(list, template, itemId) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.item = itemId;
  node.querySelector(".name").textContent = itemId;
  node.querySelector("like-button").setAttribute("item", itemId);
  list.append(node);
}

// A click the server (or the button, before asking it) refused, already rolled back.
function onRefused({ detail }) {
  if (detail.status === 401 && detail.code === "unauthorized") {
    say("Sign in to like.");
    return;
  }
  say(`Could not ${detail.liked ? "like" : "unlike"} ${detail.item}: ${detail.message}`);
  if (detail.status === 401) signOut();
}

function onConnection({ detail }) {
  const node = document.getElementById("connection");
  node.dataset.state = detail.state;
  node.textContent = { live: "live", connecting: "connecting…" }[detail.state] ?? "reconnecting…";
}

function signOut() {
  LikeButton.setToken(null);
  document.getElementById("who").textContent = "Your session expired: sign in again.";
  delete document.body.dataset.signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const user = document.getElementById("user").value.trim();
  try {
    const minted = await devToken(API, user);
    LikeButton.setToken(minted.token, minted.user_id);
    document.getElementById("who").textContent = `Signed in as ${minted.user_id}.`;
    say("");
  } catch (error) {
    say(error.status === 404 ? "Sign-in is only available in development." : error.message);
    return;
  }
  document.body.dataset.signedIn = "true";
}

// The trending panel: the top items of the chosen window, as the server pushes them.
function onTrending({ detail }) {
  const panel = document.getElementById("trending");
  if (panel.dataset.window !== detail.window) return; // a frame of the window we just left
  const list = document.getElementById("trending-items");
  list.replaceChildren(
    ...detail.items.map(({ item_id: itemId, likes }) => {
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
  // The buttons' own WebSocket also carries the trending panel and the connection state.
  const feed = LikeButton.feed(API);
  feed.addEventListener("state", onConnection);
  feed.addEventListener("trending", onTrending);
  document.addEventListener("like-error", onRefused);
  const list = document.getElementById("items");
  const template = document.getElementById("item-template");
  for (const itemId of pageItems()) addItem(list, template, itemId);
  document.getElementById("signin").addEventListener("submit", signIn);
  for (const button of document.querySelectorAll("#trending .windows button")) {
    button.addEventListener("click", () => showWindow(feed, button.dataset.window));
  }
  showWindow(feed, "1h");
}

main();
