// The screens before login (seed sections 1–3): authorization (Рисунок 2), registration
// (Рисунок 4, hints of Рисунок 8), the success notice (Рисунок 5), password recovery, the reset
// form the emailed link opens, and the sub-user email confirmation. The registration form
// carries the «Я не робот» captcha of Рисунок 8 when the server has one on (GET /captcha).

import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, mount, field, checkbox, notice, wireForm, errorText, nextId } from "./dom.js";
import { iinProblem, emailOk, phoneOk, passwordOk } from "./format.js";

/** The centred card every pre-login screen sits in, with the brand and the language switch. */
function card(ctx, titleKey, ...body) {
  return h(
    "div",
    { class: "auth-page" },
    h(
      "main",
      { class: "auth-card", id: "main" },
      h(
        "div",
        { class: "auth-head" },
        h("img", { class: "auth-logo", src: "/assets/logo.svg", alt: t("app.brand"), width: 150, height: 40 }),
        ctx.langSwitch(),
      ),
      h("h1", { class: "auth-title", tabindex: "-1" }, t(titleKey)),
      ...body,
    ),
  );
}

function box() {
  return h("div", { class: "form-box", tabindex: "-1" });
}

/** Рисунок 2: Имя пользователя, Пароль, Запомни меня, Забыли пароль?, Войти, Регистрация. */
export function login(ctx) {
  const msg = box();
  if (ctx.flash) mount(msg, notice(ctx.flash.kind, ctx.flash.text));
  const user = field({ name: "username", label: "login.username", required: true, autocomplete: "username", hint: "login.username_hint" });
  const pass = field({ name: "password", label: "login.password", type: "password", required: true, autocomplete: "current-password" });
  const remember = checkbox("remember_me", "login.remember", false);
  const form = h(
    "form",
    { class: "form" },
    msg,
    user,
    pass,
    h("div", { class: "row-between" }, remember, h("a", { href: "#/forgot", class: "link" }, t("login.forgot"))),
    h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("login.submit")),
    h("a", { href: "#/register", class: "btn btn-secondary btn-block", role: "button" }, t("login.register")),
    h("p", { class: "muted small center" }, t("login.first_time")),
  );
  wireForm(form, {
    box: msg,
    validate: () => ({
      username: user.input.value.trim() ? null : "v.required",
      password: pass.input.value ? null : "v.required",
    }),
    submit: async () => {
      await api("POST", "/session", {
        username: user.input.value.trim(),
        password: pass.input.value,
        remember_me: remember.input.checked,
      }, { quiet401: true });
      pass.input.value = "";
      await ctx.loggedIn();
    },
  });
  return card(ctx, "login.title", form);
}

// ---------------------------------------------------------------- the registration captcha

let captchaSettings = null;

/** The server's captcha settings ({provider, site_key, script_url}), asked once per page load
 * (again after a failure). */
function captchaConfig() {
  if (!captchaSettings) {
    captchaSettings = api("GET", "/captcha").catch((err) => {
      captchaSettings = null;
      throw err;
    });
  }
  return captchaSettings;
}

const RECAPTCHA_ONLOAD = "qorganRecaptchaReady";
const RECAPTCHA_TIMEOUT_MS = 20000;
let recaptchaLoading = null;

/** Loads the widget script once, from `script_url` (the page's CSP admits it only when the
 * captcha is on), in explicit-render mode; resolves to `window.grecaptcha` when its onload
 * callback runs. A failed load may be retried by the next render of the form. */
function loadRecaptcha(url) {
  if (!recaptchaLoading) {
    recaptchaLoading = new Promise((resolve, reject) => {
      const ready = window.grecaptcha;
      if (ready && typeof ready.render === "function") {
        resolve(ready);
        return;
      }
      let script = null;
      const fail = () => {
        clearTimeout(timer);
        delete window[RECAPTCHA_ONLOAD];
        if (script) script.remove();
        recaptchaLoading = null;
        reject(new Error("captcha script did not load"));
      };
      const timer = setTimeout(fail, RECAPTCHA_TIMEOUT_MS);
      window[RECAPTCHA_ONLOAD] = () => {
        clearTimeout(timer);
        delete window[RECAPTCHA_ONLOAD];
        resolve(window.grecaptcha);
      };
      const src = url + (url.includes("?") ? "&" : "?") + "render=explicit&onload=" + RECAPTCHA_ONLOAD;
      script = h("script", { src, async: true, onerror: fail });
      document.head.appendChild(script);
    });
  }
  return recaptchaLoading;
}

/**
 * The «Я не робот» field: hidden, and never sent, unless the server's provider is "recaptcha".
 * Like field(), a `data-field` wrapper with an error slot, so that wireForm shows an API error
 * whose field is `captcha` next to the widget.
 */
function captchaField() {
  const errId = nextId("f-captcha") + "-err";
  const slot = h("div", { class: "captcha-widget" });
  const error = h("p", { class: "field-error", id: errId, role: "alert", hidden: true });
  const wrap = h("div", { class: "field", "data-field": "captcha", role: "group", "aria-label": t("reg.captcha"), "aria-describedby": errId, hidden: true }, slot, error);
  const state = { on: false, g: null, widget: null, broken: false };
  const showError = (text) => {
    wrap.classList.toggle("has-error", !!text);
    error.hidden = !text;
    error.textContent = text || "";
  };
  const clearError = () => showError(null);
  captchaConfig()
    .then(async (cfg) => {
      if (!cfg || cfg.provider !== "recaptcha") return;
      state.on = true;
      wrap.hidden = false;
      const g = await loadRecaptcha(cfg.script_url);
      state.widget = g.render(slot, { sitekey: cfg.site_key, callback: clearError });
      state.g = g;
    })
    .catch(() => {
      // Without the settings the form goes as without a captcha; a server that wants one
      // answers captcha_failed, which reveal() below makes visible.
      if (!state.on) return;
      state.broken = true;
      showError(t("reg.captcha_unavailable"));
    });
  return {
    wrap,
    /** The dictionary key of what keeps the form from being sent, or null. */
    problem() {
      if (!state.on) return null;
      if (!state.g) return state.broken ? "reg.captcha_unavailable" : "reg.captcha_loading";
      return this.token() ? null : "err.captcha_failed";
    },
    /** The response token for POST /register, or undefined when no captcha is on. */
    token() {
      return state.g ? state.g.getResponse(state.widget) || "" : undefined;
    },
    /** A token is good for one verification: a failed attempt needs a fresh tick. */
    reset() {
      if (state.g) state.g.reset(state.widget);
    },
    reveal() {
      wrap.hidden = false;
    },
  };
}

/** Рисунок 4 with the hints of section 3 (Рисунок 8). */
export function register(ctx) {
  const msg = box();
  const fullName = field({ name: "full_name", label: "reg.full_name", placeholder: "reg.full_name_ph", autocomplete: "name", maxlength: 200 });
  const company = field({ name: "company", label: "reg.company", placeholder: "reg.company_ph", autocomplete: "organization", maxlength: 200 });
  const email = field({ name: "email", label: "reg.email", type: "email", required: true, placeholder: "reg.email_ph", autocomplete: "email" });
  const phone = field({ name: "phone", label: "reg.phone", type: "tel", required: true, placeholder: "reg.phone_ph", autocomplete: "tel", inputmode: "tel" });
  const hint = h(
    "details",
    { class: "hint-box" },
    h("summary", {}, t("reg.hint_toggle")),
    h("p", {}, t("reg.hint_text")),
    h("p", { class: "muted" }, t("reg.hint_help")),
  );
  const contract = field({ name: "contract_number", label: "reg.contract", required: true, placeholder: "reg.contract_ph", maxlength: 64, after: hint });
  const iin = field({ name: "iin_bin", label: "reg.iin", required: true, placeholder: "reg.iin_ph", inputmode: "numeric", maxlength: 14, hint: "reg.iin_hint" });
  const captcha = captchaField();
  const form = h(
    "form",
    { class: "form" },
    msg,
    h("div", { class: "grid-2" }, fullName, company, email, phone),
    h("fieldset", { class: "fieldset" }, h("legend", {}, t("reg.auth_data")), h("div", { class: "grid-2" }, contract, iin)),
    captcha.wrap,
    h("p", { class: "muted small" }, t("app.required_note")),
    h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("reg.submit")),
    h("p", { class: "center small" }, t("reg.have_account"), " ", h("a", { href: "#/login", class: "link" }, t("reg.to_login"))),
  );
  wireForm(form, {
    box: msg,
    validate: () => ({
      email: !email.input.value.trim() ? "v.required" : emailOk(email.input.value) ? null : "v.email",
      phone: !phone.input.value.trim() ? "v.required" : phoneOk(phone.input.value) ? null : "v.phone",
      contract_number: contract.input.value.trim() ? null : "v.required",
      iin_bin: iin.input.value.trim() ? iinProblem(iin.input.value) : "v.required",
      captcha: captcha.problem(),
    }),
    submit: async () => {
      const body = {
        full_name: fullName.input.value.trim() || null,
        company: company.input.value.trim() || null,
        email: email.input.value.trim(),
        phone: phone.input.value.trim(),
        contract_number: contract.input.value.trim(),
        iin_bin: iin.input.value.replace(/[\s-]/g, ""),
        captcha: captcha.token(),
      };
      try {
        const res = await api("POST", "/register", body);
        ctx.registered = { login: res.login, name: body.full_name };
        ctx.go("registered");
      } catch (err) {
        // Рисунок 8: a contract that does not match opens the hint under the field.
        if (err.code === "contract_not_matched") hint.open = true;
        // The token was spent (or refused): the next attempt needs a fresh tick.
        captcha.reset();
        if (err.field === "captcha") captcha.reveal();
        throw err;
      }
    },
  });
  return card(ctx, "reg.title", form);
}

/** Рисунок 5: the success notice. */
export function registered(ctx) {
  const r = ctx.registered;
  if (!r) {
    ctx.go("login");
    return h("div");
  }
  return card(
    ctx,
    "done.title",
    h(
      "div",
      { class: "success", role: "status" },
      h("p", { class: "lead" }, r.name ? t("done.dear", { name: r.name }) : t("done.thanks")),
      h("p", { "data-login": r.login }, t("done.ok", { login: r.login })),
      h("p", {}, t("done.mail")),
      h("p", {}, t("done.advice")),
      h("p", {}, t("done.to_login_pre"), " ", h("a", { href: "#/login", class: "link" }, t("done.to_login"))),
    ),
  );
}

/** «Забыли пароль?»: asks for the login; the answer never tells whether it exists. */
export function forgot(ctx) {
  const msg = box();
  const user = field({ name: "username", label: "login.username", required: true, autocomplete: "username", hint: "login.username_hint" });
  const form = h(
    "form",
    { class: "form" },
    h("p", { class: "muted" }, t("forgot.intro")),
    msg,
    user,
    h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("forgot.submit")),
    h("p", { class: "center small" }, h("a", { href: "#/login", class: "link" }, t("forgot.back"))),
  );
  wireForm(form, {
    box: msg,
    validate: () => ({ username: user.input.value.trim() ? null : "v.required" }),
    submit: async () => {
      await api("POST", "/password/forgot", { username: user.input.value.trim() });
      mount(msg, notice("success", t("forgot.sent")));
      msg.focus();
    },
  });
  return card(ctx, "forgot.title", form);
}

/** The page the reset email's link (`/reset-password?token=…`) opens. */
export function reset(ctx) {
  const msg = box();
  const token = ctx.tokens.reset;
  if (!token) {
    return card(ctx, "reset.title", notice("error", t("reset.no_token")), h("p", { class: "center" }, h("a", { href: "#/forgot", class: "link" }, t("reset.again"))));
  }
  const pw = field({ name: "new_password", label: "reset.new", type: "password", required: true, autocomplete: "new-password", hint: "v.pw_len" });
  const pw2 = field({ name: "repeat", label: "reset.repeat", type: "password", required: true, autocomplete: "new-password" });
  const form = h("form", { class: "form" }, msg, pw, pw2, h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("reset.submit")));
  wireForm(form, {
    box: msg,
    validate: () => ({
      new_password: passwordOk(pw.input.value) ? null : "v.pw_len",
      repeat: pw.input.value === pw2.input.value ? null : "v.pw_match",
    }),
    submit: async () => {
      try {
        await api("POST", "/password/reset", { token, new_password: pw.input.value });
      } catch (err) {
        if (err.code === "token_invalid") {
          mount(msg, notice("error", errorText(err)), h("p", {}, h("a", { href: "#/forgot", class: "link" }, t("reset.again"))));
          return;
        }
        throw err;
      }
      ctx.tokens.reset = null;
      ctx.flash = { kind: "success", text: t("reset.done") };
      ctx.go("login");
    },
  });
  return card(ctx, "reset.title", form);
}

/** The page a sub-user's invitation link opens: confirms the email, then offers the login. */
export function confirm(ctx) {
  const msg = h("div", { class: "form-box", role: "status" }, t("confirm.working"));
  const token = ctx.tokens.confirm;
  const view = card(ctx, "confirm.title", msg, h("p", { class: "center" }, h("a", { href: "#/login", class: "btn btn-primary" }, t("login.submit"))));
  if (!token) {
    mount(msg, notice("error", t("reset.no_token")));
  } else if (ctx.confirmed) {
    mount(msg, notice("success", t("confirm.done", { email: ctx.confirmed })));
  } else {
    api("GET", "/users/confirm?token=" + encodeURIComponent(token))
      .then((res) => {
        ctx.confirmed = res.email;
        ctx.tokens.confirm = token;
        mount(msg, notice("success", t("confirm.done", { email: res.email })));
      })
      .catch((err) => mount(msg, notice("error", errorText(err))));
  }
  return view;
}
