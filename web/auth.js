// Where session tokens come from: Clerk's browser SDK when a publishable key is configured, or
// the API's dev issuer (`quoteapi dev`, no Clerk account needed).

import { fetchDevToken } from "./api.js";

const DEV_USER_KEY = "quoteapi.devUser";
const REFRESH_MARGIN_MS = 15_000;

export class DevAuth {
  constructor(apiBaseUrl) {
    this.apiBaseUrl = apiBaseUrl;
    this.userId = localStorage.getItem(DEV_USER_KEY) || "user_dev";
    this.cached = null;
  }

  get signedIn() {
    return true;
  }

  describe() {
    return `Dev mode: tokens from the API's dev issuer, signed in as ${this.userId}.`;
  }

  switchUser(userId) {
    this.userId = userId;
    this.cached = null;
    localStorage.setItem(DEV_USER_KEY, userId);
  }

  // Like Clerk's getToken(): a cached token until shortly before it expires.
  async getToken() {
    const cached = this.cached;
    if (cached && cached.userId === this.userId && Date.now() < cached.refreshAt) {
      return cached.token;
    }
    const { token, expires_in: expiresIn } = await fetchDevToken(this.apiBaseUrl, this.userId);
    this.cached = {
      userId: this.userId,
      token,
      refreshAt: Date.now() + expiresIn * 1000 - REFRESH_MARGIN_MS,
    };
    return token;
  }
}

/** The Frontend API host inside a publishable key (pk_test_/pk_live_ + base64 of `host$`). */
export function frontendApi(publishableKey) {
  const encoded = publishableKey.replace(/^pk_(test|live)_/, "");
  return atob(encoded).replace(/\$$/, "");
}

function loadScript(src, publishableKey) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.crossOrigin = "anonymous";
    script.dataset.clerkPublishableKey = publishableKey; // data-clerk-publishable-key
    script.addEventListener("load", resolve);
    script.addEventListener("error", () => reject(new Error(`Cannot load Clerk from ${src}`)));
    document.head.append(script);
  });
}

export class ClerkAuth {
  static async load(publishableKey) {
    const host = frontendApi(publishableKey);
    await loadScript(`https://${host}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`, publishableKey);
    await window.Clerk.load();
    return new ClerkAuth(window.Clerk);
  }

  constructor(clerk) {
    this.clerk = clerk;
  }

  get signedIn() {
    return Boolean(this.clerk.user);
  }

  describe() {
    return this.signedIn ? `Signed in with Clerk as ${this.clerk.user.id}.` : "Sign in to save a quote.";
  }

  mount(signInElement, userButtonElement) {
    if (this.signedIn) this.clerk.mountUserButton(userButtonElement);
    else this.clerk.mountSignIn(signInElement);
  }

  // Reload on sign-in and sign-out: the simplest way to start over as the new user.
  onUserChange(callback) {
    const before = this.clerk.user?.id ?? null;
    this.clerk.addListener(({ user }) => {
      if ((user?.id ?? null) !== before) callback();
    });
  }

  getToken() {
    return this.clerk.session.getToken();
  }
}
