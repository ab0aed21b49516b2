// The cabinet's entry point: reads the email-link routes, asks the API who is logged in, and
// renders the screen of the current hash route. No framework: each screen is a function that
// returns DOM built from the API's data.

import { api, setUnauthorizedHandler } from "./api.js";
import { t, tIn, lang, setLang, LANGS } from "./i18n.js";
import { h, mount } from "./dom.js";
import * as auth from "./auth.js";
import { shell } from "./shell.js";

const root = document.getElementById("app");

const PUBLIC = { login: auth.login, register: auth.register, registered: auth.registered, forgot: auth.forgot, reset: auth.reset, confirm: auth.confirm };
const PUBLIC_TITLES = { login: "login.title", register: "reg.title", registered: "done.title", forgot: "forgot.title", reset: "reset.title", confirm: "confirm.title" };

const ctx = {
  me: null,
  flash: null,
  registered: null,
  confirmed: null,
  tokens: { reset: null, confirm: null },
  go(route) {
    const target = "#/" + route;
    if (location.hash === target) render();
    else location.hash = target;
  },
  async refreshMe() {
    try {
      ctx.me = await api("GET", "/me", undefined, { quiet401: true });
    } catch (err) {
      if (err.status === 401) ctx.me = null;
      else throw err;
    }
    return ctx.me;
  },
  async loggedIn() {
    await ctx.refreshMe();
    ctx.flash = null;
    ctx.go("services");
  },
  async logout() {
    try {
      await api("DELETE", "/session", undefined, { quiet401: true });
    } catch {
      // already gone: the page forgets it either way
    }
    ctx.me = null;
    ctx.go("login");
  },
  /** The language switch (a labelled select), re-rendering the screen on change. */
  langSwitch() {
    const id = "lang-" + Math.random().toString(36).slice(2, 8);
    const select = h(
      "select",
      { id, class: "lang-select", onchange: (ev) => { setLang(ev.target.value); render(); } },
      LANGS.map((code) => h("option", { value: code, selected: code === lang() }, tIn(code, "lang.name"))),
    );
    return h("div", { class: "lang" }, h("label", { for: id, class: "sr-only" }, t("lang.label")), select);
  },
  render,
};

function currentRoute() {
  return decodeURIComponent(location.hash.replace(/^#\/?/, ""));
}

function render() {
  const route = currentRoute();
  document.documentElement.lang = lang();
  const name = route.split("/")[0];
  if (PUBLIC[name]) {
    if (ctx.me && (name === "login" || name === "register")) {
      ctx.go("services");
      return;
    }
    document.title = `${t(PUBLIC_TITLES[name])} — ${t("app.brand")}`;
    mount(root, PUBLIC[name](ctx));
    if (name !== "login") ctx.flash = null;
  } else if (!ctx.me) {
    ctx.go("login");
    return;
  } else {
    mount(root, shell(ctx, route || "services"));
  }
  const heading = root.querySelector("h1");
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

async function start() {
  // The emails' links land on real paths; keep their token in memory only and move to the
  // hash route, so that the token leaves the address bar and the history.
  const params = new URLSearchParams(location.search);
  if (location.pathname === "/reset-password") {
    ctx.tokens.reset = params.get("token");
    history.replaceState(null, "", "/#/reset");
  } else if (location.pathname === "/confirm-email") {
    ctx.tokens.confirm = params.get("token");
    history.replaceState(null, "", "/#/confirm");
  }
  setUnauthorizedHandler(() => {
    ctx.me = null;
    ctx.flash = { kind: "error", text: t("err.unauthorized") };
    ctx.go("login");
  });
  mount(root, h("p", { class: "loading" }, t("app.loading")));
  try {
    await ctx.refreshMe();
  } catch {
    ctx.me = null;
  }
  window.addEventListener("hashchange", render);
  render();
}

start();
