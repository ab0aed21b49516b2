// «Мой профиль» (seed 5.1, Рисунок 5's advice "Мой профиль -> Сменить пароль"): who is logged
// in, and the password change over POST /api/v1/me/password.

import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, mount, field, notice, wireForm } from "./dom.js";
import { passwordOk } from "./format.js";

export function view(ctx) {
  const me = ctx.me;
  const login = me.user.is_owner ? me.account_number : me.user.email;
  const rows = [
    ["profile.login", login],
    ["profile.name", me.user.full_name || "—"],
    ["profile.email", me.user.email],
    ["profile.role", t(me.user.is_owner ? "profile.owner" : "profile.sub")],
    ["bar.account", me.account_number],
    ["bar.contract", me.contract_number],
  ];
  const msg = h("div", { class: "form-box", tabindex: "-1" });
  const current = field({ name: "current_password", label: "profile.current", type: "password", required: true, autocomplete: "current-password" });
  const pw = field({ name: "new_password", label: "profile.new", type: "password", required: true, autocomplete: "new-password", hint: "v.pw_len" });
  const pw2 = field({ name: "repeat", label: "profile.repeat", type: "password", required: true, autocomplete: "new-password" });
  const form = h(
    "form",
    { class: "form panel", id: "change-password" },
    h("h2", {}, t("profile.change")),
    msg,
    current,
    pw,
    pw2,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t("profile.save"))),
  );
  wireForm(form, {
    box: msg,
    validate: () => ({
      current_password: current.input.value ? null : "v.required",
      new_password: passwordOk(pw.input.value) ? null : "v.pw_len",
      repeat: pw.input.value === pw2.input.value ? null : "v.pw_match",
    }),
    submit: async () => {
      await api("POST", "/me/password", { current_password: current.input.value, new_password: pw.input.value });
      for (const f of [current, pw, pw2]) f.input.value = "";
      mount(msg, notice("success", t("profile.changed")));
      msg.focus();
    },
  });
  return h(
    "div",
    { class: "narrow" },
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, t("profile.title"))),
    h("section", { class: "panel" }, h("dl", { class: "kv" }, rows.map(([k, v]) => h("div", {}, h("dt", {}, t(k)), h("dd", {}, v))))),
    form,
  );
}
