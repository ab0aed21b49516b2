// The logged-in frame: the top bar of Рисунок 10 (лицевой счёт, № договора, баланс, «Мой
// профиль») and the navigation panel of Рисунок 11 with every section of 5.2, around the
// current section.

import { t } from "./i18n.js";
import { h } from "./dom.js";
import { money } from "./format.js";
import * as users from "./users.js";
import * as profile from "./profile.js";
import * as sections from "./sections.js";
import * as dnsfilter from "./dnsfilter.js";

/** The navigation of seed 5.2, in its order. `sub` are the sub-items of 5.2.1. */
function navItems(me) {
  const items = [
    { route: "services", label: "nav.services", icon: "services", sub: [
      { route: "services", label: "nav.services_mine" },
      { route: "services/connect", label: "nav.services_connect" },
    ] },
    { route: "requests", label: "nav.requests", icon: "requests" },
    { route: "payments", label: "nav.payments", icon: "payments" },
    { route: "invoices", label: "nav.invoices", icon: "invoices" },
    { route: "dns", label: "nav.dns", icon: "dns" },
    { route: "topup", label: "nav.topup", icon: "topup" },
  ];
  // Seed 5.2.7: only a user who "may add users" gets the Users module.
  if (me.user.can_manage_users) items.push({ route: "users", label: "nav.users", icon: "users" });
  return items;
}

const SECTIONS = {
  services: sections.services,
  "services/connect": sections.connect,
  requests: sections.requests,
  payments: sections.payments,
  invoices: sections.invoices,
  dns: dnsfilter.view,
  topup: sections.topup,
  users: users.list,
  "users/new": users.create,
  profile: profile.view,
};

function pick(route) {
  if (SECTIONS[route]) return { view: SECTIONS[route], key: route };
  const m = /^users\/(\d+)$/.exec(route);
  if (m) return { view: (ctx) => users.edit(ctx, Number(m[1])), key: "users" };
  return { view: sections.services, key: "services" };
}

function icon(name) {
  return h("span", { class: `icon icon-${name}`, "aria-hidden": "true" });
}

export function shell(ctx, route) {
  const me = ctx.me;
  const { view, key } = pick(route);
  const top = key.split("/")[0];
  const closeNav = () => document.body.classList.remove("nav-open");
  const menuButton = h(
    "button",
    {
      class: "icon-btn menu-btn",
      type: "button",
      "aria-label": t("bar.menu"),
      "aria-controls": "nav",
      "aria-expanded": "false",
      onclick: () => {
        const open = document.body.classList.toggle("nav-open");
        menuButton.setAttribute("aria-expanded", String(open));
      },
    },
    h("span", { class: "burger", "aria-hidden": "true" }),
  );
  const bar = h(
    "header",
    { class: "topbar" },
    h("a", { class: "skip", href: "#main-content", onclick: (ev) => { ev.preventDefault(); document.getElementById("main-content")?.focus(); } }, t("app.skip")),
    menuButton,
    h("a", { class: "brand", href: "#/services" }, h("img", { src: "/assets/logo.svg", alt: t("app.brand"), width: 120, height: 32 })),
    h(
      "dl",
      { class: "facts" },
      h("div", { class: "fact", "data-fact": "account" }, h("dt", {}, t("bar.account")), h("dd", {}, me.account_number)),
      h("div", { class: "fact", "data-fact": "contract" }, h("dt", {}, t("bar.contract")), h("dd", {}, me.contract_number)),
      h("div", { class: "fact", "data-fact": "balance" }, h("dt", {}, t("bar.balance")), h("dd", { class: me.balance_tiyn < 0 ? "neg" : "" }, money(me.balance_tiyn))),
    ),
    h(
      "div",
      { class: "bar-actions" },
      ctx.langSwitch(),
      h("a", { class: "bar-link", href: "#/profile", "aria-current": top === "profile" ? "page" : null }, icon("user"), h("span", { class: "bar-link-text" }, t("bar.profile"))),
      h("button", { class: "bar-link", type: "button", onclick: () => ctx.logout() }, icon("logout"), h("span", { class: "bar-link-text" }, t("bar.logout"))),
    ),
  );
  const nav = h(
    "nav",
    { class: "sidenav", id: "nav", "aria-label": t("nav.label") },
    h(
      "ul",
      {},
      navItems(me).map((item) =>
        h(
          "li",
          {},
          h("a", { href: "#/" + item.route, class: "nav-link", "aria-current": top === item.route && !item.sub ? "page" : null, "data-nav": item.route, onclick: closeNav }, icon(item.icon), t(item.label)),
          item.sub
            ? h(
                "ul",
                { class: "subnav" },
                item.sub.map((s) => h("li", {}, h("a", { href: "#/" + s.route, class: "nav-sublink", "aria-current": key === s.route ? "page" : null, onclick: closeNav }, t(s.label)))),
              )
            : null,
        ),
      ),
    ),
  );
  const main = h("main", { class: "content", id: "main-content", tabindex: "-1" }, view(ctx));
  const scrim = h("div", { class: "scrim", onclick: closeNav, "aria-hidden": "true" });
  document.title = `${t("app.title")} — ${t("app.brand")}`;
  return h("div", { class: "layout" }, bar, h("div", { class: "body" }, nav, scrim, main));
}
