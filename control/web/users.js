// Seed 5.2.7 «Пользователи»: the list of Рисунок 12 and the form of Рисунок 13 (both password
// options and «Может добавлять пользователей»), edit and delete, over GET/POST/PATCH/DELETE
// /api/v1/users. The API enforces the tree rule; the page only shows what it allows.

import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, mount, field, checkbox, notice, wireForm, errorText, nextId } from "./dom.js";
import { emailOk, passwordOk } from "./format.js";

function header(titleKey, introKey) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, t(titleKey)), introKey ? h("p", { class: "muted" }, t(introKey)) : null);
}

function denied() {
  return h("div", {}, header("users.title"), notice("error", t("users.no_right")));
}

/** Рисунок 12: the list with «+ Создать пользователя» and the edit/delete operations. */
export function list(ctx) {
  if (!ctx.me.user.can_manage_users) return denied();
  const msg = h("div", { class: "form-box page-msg", tabindex: "-1" });
  if (ctx.flash) {
    mount(msg, notice(ctx.flash.kind, ctx.flash.text));
    ctx.flash = null;
  }
  const body = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, t("app.loading")));
  const dialog = confirmDialog();
  const load = async () => {
    let rows;
    try {
      rows = await api("GET", "/users");
    } catch (err) {
      mount(body, notice("error", errorText(err)));
      return;
    }
    if (!rows.length) {
      mount(body, h("p", { class: "empty" }, t("users.empty")));
      return;
    }
    mount(body, table(rows, async (u) => {
      const yes = await dialog.ask(t("users.delete_q", { email: u.email }));
      if (!yes) return;
      try {
        await api("DELETE", `/users/${u.id}`);
        mount(msg, notice("success", t("users.deleted", { email: u.email })));
      } catch (err) {
        mount(msg, notice("error", errorText(err)));
      }
      await load();
    }));
  };
  load();
  return h(
    "div",
    {},
    header("users.title", "users.intro"),
    msg,
    h(
      "section",
      { class: "panel" },
      h(
        "div",
        { class: "panel-head" },
        h("div", {}, h("h2", {}, t("users.list")), h("p", { class: "muted small" }, t("users.list_hint"))),
        h("a", { href: "#/users/new", class: "btn btn-primary", "data-action": "create-user" }, h("span", { "aria-hidden": "true" }, "+ "), t("users.create")),
      ),
      body,
    ),
    dialog.el,
  );
}

function table(rows, onDelete) {
  const cols = ["users.col_no", "users.col_email", "users.col_last", "users.col_first", "users.col_position", "users.col_ops"];
  return h(
    "table",
    { class: "table stack" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, t(c))))),
    h(
      "tbody",
      {},
      rows.map((u, i) =>
        h(
          "tr",
          { "data-user": u.email },
          h("td", { "data-label": t("users.col_no") }, String(i + 1)),
          h(
            "td",
            { "data-label": t("users.col_email") },
            h(
              "div",
              { class: "cell-main" },
              h("span", { class: "strong" }, u.email),
              u.email_confirmed ? null : h("span", { class: "badge badge-warn" }, t("users.unconfirmed")),
              u.can_manage_users ? h("span", { class: "badge" }, t("users.manager")) : null,
            ),
          ),
          h("td", { "data-label": t("users.col_last") }, u.last_name || "—"),
          h("td", { "data-label": t("users.col_first") }, u.first_name || "—"),
          h("td", { "data-label": t("users.col_position") }, u.position || "—"),
          h(
            "td",
            { "data-label": t("users.col_ops"), class: "ops" },
            h("a", { class: "icon-btn", href: `#/users/${u.id}`, "aria-label": t("users.edit", { email: u.email }), title: t("users.edit", { email: u.email }) }, h("span", { class: "icon icon-edit", "aria-hidden": "true" })),
            h("button", { class: "icon-btn danger", type: "button", "aria-label": t("users.delete", { email: u.email }), title: t("users.delete", { email: u.email }), onclick: () => onDelete(u) }, h("span", { class: "icon icon-delete", "aria-hidden": "true" })),
          ),
        ),
      ),
    ),
  );
}

/** A modal yes/no question on the native <dialog> (focus trapped, Esc cancels). */
function confirmDialog() {
  const text = h("p", {});
  const yes = h("button", { type: "button", class: "btn btn-danger" }, t("users.delete_yes"));
  const no = h("button", { type: "button", class: "btn btn-secondary" }, t("users.cancel"));
  const el = h("dialog", { class: "dialog", "aria-modal": "true" }, text, h("div", { class: "dialog-actions" }, no, yes));
  let resolve = null;
  const finish = (v) => {
    if (el.open) el.close();
    if (resolve) resolve(v);
    resolve = null;
  };
  yes.addEventListener("click", () => finish(true));
  no.addEventListener("click", () => finish(false));
  el.addEventListener("cancel", () => finish(false));
  return {
    el,
    ask(question) {
      text.textContent = question;
      el.showModal();
      no.focus();
      return new Promise((r) => {
        resolve = r;
      });
    },
  };
}

/** The password choice of Рисунок 13: radio buttons and the two password fields. */
function passwordChoice(editing) {
  const name = nextId("pwmode");
  const options = editing ? ["keep", "self", "generate"] : ["self", "generate"];
  const labels = { keep: "users.pw_keep", self: "users.pw_self", generate: "users.pw_generate" };
  const radios = {};
  const group = h(
    "fieldset",
    { class: "radio-group", "data-field": "password_mode" },
    h("legend", {}, t("users.pw_choice")),
    options.map((o, i) => {
      const id = nextId("pw-" + o);
      radios[o] = h("input", { type: "radio", name, id, value: o, checked: i === 0 });
      return h("div", { class: "check" }, radios[o], h("label", { for: id }, t(labels[o])));
    }),
  );
  const pw = field({ name: "password", label: "users.password", type: "password", required: true, placeholder: "users.password_ph", autocomplete: "new-password", hint: "v.pw_len" });
  const pw2 = field({ name: "password2", label: "users.password2", type: "password", required: true, placeholder: "users.password2", autocomplete: "new-password" });
  const fields = h("div", { class: "grid-2" }, pw, pw2);
  const mode = () => Object.keys(radios).find((k) => radios[k].checked);
  const sync = () => {
    fields.hidden = mode() !== "self";
  };
  for (const r of Object.values(radios)) r.addEventListener("change", sync);
  sync();
  return {
    el: h("div", {}, group, fields),
    mode,
    validate() {
      if (mode() !== "self") return {};
      return {
        password: passwordOk(pw.input.value) ? null : "v.pw_len",
        password2: pw.input.value === pw2.input.value ? null : "v.pw_match",
      };
    },
    body() {
      if (mode() === "self") return { password: pw.input.value };
      if (mode() === "generate") return { generate_password: true };
      return {};
    },
  };
}

function userForm(ctx, existing) {
  const editing = !!existing;
  const msg = h("div", { class: "form-box", tabindex: "-1" });
  const email = field({ name: "email", label: "users.email", type: "email", required: !editing, placeholder: "users.email", autocomplete: "off", readonly: editing, value: existing?.email });
  const pw = passwordChoice(editing);
  const first = field({ name: "first_name", label: "users.first", placeholder: "users.first", maxlength: 100, value: existing?.first_name });
  const last = field({ name: "last_name", label: "users.last", placeholder: "users.last", maxlength: 100, value: existing?.last_name });
  const position = field({ name: "position", label: "users.position", placeholder: "users.position", maxlength: 100, value: existing?.position });
  const manage = checkbox("can_manage_users", "users.can_manage", existing?.can_manage_users);
  const form = h(
    "form",
    { class: "form panel" },
    h("h2", {}, t(editing ? "users.form_edit" : "users.form_create")),
    msg,
    email,
    pw.el,
    h("div", { class: "grid-3" }, first, last, position),
    manage,
    h("p", { class: "muted small" }, t("app.required_note")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, t("users.save")), h("a", { href: "#/users", class: "btn btn-secondary" }, t("users.back"))),
  );
  wireForm(form, {
    box: msg,
    validate: () => ({
      email: editing ? null : !email.input.value.trim() ? "v.required" : emailOk(email.input.value) ? null : "v.email",
      ...pw.validate(),
    }),
    submit: async () => {
      const names = {
        first_name: first.input.value.trim(),
        last_name: last.input.value.trim(),
        position: position.input.value.trim(),
        can_manage_users: manage.input.checked,
      };
      if (editing) {
        await api("PATCH", `/users/${existing.id}`, { ...names, ...pw.body() });
        ctx.flash = { kind: "success", text: t("users.saved") };
      } else {
        const created = await api("POST", "/users", {
          email: email.input.value.trim(),
          first_name: names.first_name || null,
          last_name: names.last_name || null,
          position: names.position || null,
          can_manage_users: names.can_manage_users,
          ...pw.body(),
        });
        ctx.flash = { kind: "success", text: t("users.created", { email: created.email }) };
      }
      ctx.go("users");
    },
  });
  return form;
}

/** Рисунок 13: «Создание пользователя». */
export function create(ctx) {
  if (!ctx.me.user.can_manage_users) return denied();
  return h("div", { class: "narrow" }, header("users.title"), userForm(ctx, null));
}

/** The same form for an existing user (email fixed; password kept unless changed). */
export function edit(ctx, id) {
  if (!ctx.me.user.can_manage_users) return denied();
  const holder = h("div", {}, h("p", { class: "loading" }, t("app.loading")));
  api("GET", "/users")
    .then((rows) => {
      const u = rows.find((r) => r.id === id);
      mount(holder, u ? userForm(ctx, u) : notice("error", t("users.not_found")));
    })
    .catch((err) => mount(holder, notice("error", errorText(err))));
  return h("div", { class: "narrow" }, header("users.title"), holder);
}
