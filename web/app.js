// The page of Neon's guide "Authenticate Neon Postgres application users with Clerk", against
// quoteapi: show the stored quote or the form to save one; replace and delete it safely.

import { createApi } from "./api.js";
import { ClerkAuth, DevAuth } from "./auth.js";

const $ = (id) => document.getElementById(id);
const STATES = ["loading", "sign-in", "empty", "stored"];

let api = null;
let current = null; // the quote shown, with its ETag; null when none is stored

function show(state) {
  document.body.dataset.state = state;
  $("status").hidden = state !== "loading";
  for (const id of STATES.slice(1)) $(id).hidden = id !== state;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function render() {
  if (current === null) {
    show("empty");
    return;
  }
  $("quote").textContent = current.message;
  const updated = new Date(current.updated_at).toLocaleString();
  $("quote-meta").textContent = `Saved ${updated} · version ${current.etag}`;
  $("replacement").value = current.message;
  show("stored");
}

async function refresh() {
  current = await api.read();
  render();
}

// Run one user action: clear the last error, keep the buttons still while it runs, and show
// the API's `detail` if it fails. On 404/412 someone else changed the quote: show theirs.
async function act(action) {
  showError("");
  const buttons = document.querySelectorAll("main button");
  for (const button of buttons) button.disabled = true;
  try {
    await action();
  } catch (error) {
    showError(error.message);
    if (error.status === 404 || error.status === 412) await refresh().catch(() => {});
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function wireForms(auth) {
  $("save-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      current = await api.create($("new-quote").value);
      $("new-quote").value = "";
      render();
    });
  });
  $("replace-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      current = await api.replace($("replacement").value, current.etag);
      render();
    });
  });
  $("delete").addEventListener("click", () =>
    act(async () => {
      await api.remove(current.etag);
      current = null;
      render();
    }),
  );
  if (auth instanceof DevAuth) {
    const form = $("dev-user-form");
    form.hidden = false;
    $("dev-user").value = auth.userId;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      auth.switchUser($("dev-user").value.trim());
      $("mode").textContent = auth.describe();
      act(refresh);
    });
  }
}

async function main() {
  let config;
  try {
    const response = await fetch("./config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status}`);
    config = await response.json();
  } catch {
    showError("config.json is missing beside this page: copy config.example.json and edit it.");
    return;
  }
  let auth;
  if (config.auth === "dev") {
    auth = new DevAuth(config.apiBaseUrl);
  } else if (config.clerkPublishableKey) {
    auth = await ClerkAuth.load(config.clerkPublishableKey);
    auth.mount($("sign-in"), $("user-button"));
    auth.onUserChange(() => location.reload());
  } else {
    showError("config.json names no clerkPublishableKey: set CLERK_PUBLISHABLE_KEY.");
    return;
  }
  $("mode").textContent = auth.describe();
  api = createApi(config.apiBaseUrl, () => auth.getToken());
  wireForms(auth);
  if (!auth.signedIn) {
    show("sign-in");
    return;
  }
  await act(refresh);
}

main().catch((error) => showError(error.message));
