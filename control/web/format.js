// Money, dates and the client-side checks that mirror the API's (CONTRACT §5): the API stays
// the authority, these only spare the user a round trip.

import { lang, t } from "./i18n.js";

// Kazakh writes numbers as Russian does (space groups, decimal comma); browsers without Kazakh
// locale data would fall back to "1,500", so its numbers use the Russian rules.
const LOCALES = { ru: "ru-RU", kk: "ru-RU", en: "en-US" };
const TIME_ZONE = "Asia/Almaty";

function locale() {
  return LOCALES[lang()] || "ru-RU";
}

/** Integer tiyn as tenge: "1 425 ₸", "-12 000,50 ₸" (thousands separated, kopecks when any). */
export function money(tiyn) {
  if (typeof tiyn !== "number" || !Number.isFinite(tiyn)) return "—";
  const negative = tiyn < 0;
  const abs = Math.abs(Math.trunc(tiyn));
  const whole = Math.floor(abs / 100);
  const frac = abs % 100;
  const nf = new Intl.NumberFormat(locale(), { maximumFractionDigits: 0, useGrouping: true });
  let text = nf.format(whole);
  if (frac) {
    const sep = new Intl.NumberFormat(locale()).formatToParts(1.5).find((p) => p.type === "decimal");
    text += (sep ? sep.value : ",") + String(frac).padStart(2, "0");
  }
  return (negative ? "−" : "") + text + "\u00a0₸";
}

/** The parts of a timestamp in Asia/Almaty: {day, month, year, hour, minute}, or null. */
function almatyParts(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return null;
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone: TIME_ZONE,
    day: "2-digit",
    month: "2-digit",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(d);
  const get = (type) => parts.find((p) => p.type === type)?.value ?? "";
  return { day: get("day"), month: get("month"), year: get("year"), hour: get("hour"), minute: get("minute") };
}

/** A date or timestamp as dd.mm.yyyy. A bare ISO date ("2026-11-24") is a calendar date and is
 * not shifted; a timestamp is shown in Asia/Almaty. */
export function date(value) {
  if (typeof value !== "string" || !value) return "—";
  const bare = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (bare) return `${bare[3]}.${bare[2]}.${bare[1]}`;
  const p = almatyParts(value);
  if (!p) return value;
  return `${p.day}.${p.month}.${p.year}`;
}

/** A timestamp as dd.mm.yyyy HH:MM in Asia/Almaty. */
export function dateTime(value) {
  if (typeof value !== "string" || !value) return "—";
  const p = almatyParts(value);
  if (!p) return value;
  return `${p.day}.${p.month}.${p.year} ${p.hour}:${p.minute}`;
}

/** A calendar date ("2026-12-02") as day and month ("02.12"), for chart labels. */
export function dayMonth(value) {
  const bare = /^\d{4}-(\d{2})-(\d{2})$/.exec(String(value));
  return bare ? `${bare[2]}.${bare[1]}` : String(value ?? "—");
}

/** A count with thousands separators: "51 234" (ru, kk), "51,234" (en). */
export function count(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0, useGrouping: true }).format(n);
}

/** `part` of `whole` as a percentage with at most one decimal: "20 %", "12,5 %"; "—" when
 * `whole` is zero. */
export function percent(part, whole) {
  if (typeof part !== "number" || typeof whole !== "number" || !(whole > 0)) return "—";
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(part / whole);
}

/** Today in Asia/Almaty as an ISO date ("2026-11-24"), for period pickers. */
export function todayIso(offsetDays = 0) {
  const d = new Date(Date.now() + offsetDays * 86400000);
  return new Intl.DateTimeFormat("en-CA", { timeZone: TIME_ZONE }).format(d);
}

/** The IIN/BIN rule: exactly 12 digits and a valid two-pass mod 11 check digit.
 * Returns null when fine, else the dictionary key of the problem. */
export function iinProblem(input) {
  const digits = String(input).replace(/[\s-]/g, "");
  if (!/^\d{12}$/.test(digits)) return "v.iin_len";
  const d = [...digits].map(Number);
  const sum = (weights) => weights.reduce((acc, w, i) => acc + w * d[i], 0) % 11;
  let c = sum([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  if (c === 10) c = sum([3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]);
  if (c === 10 || c !== d[11]) return "v.iin_check";
  return null;
}

/** A plausible email (the API decides). */
export function emailOk(input) {
  return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(String(input).trim());
}

/** A Kazakhstan mobile number in any usual writing (+7 / 8 / 7 and 10 digits). */
export function phoneOk(input) {
  const compact = String(input).replace(/[\s()-]/g, "");
  const m = /^(?:\+7|8|7)(\d{10})$/.exec(compact);
  return !!m && /^7(?:0[0-25-8]|47|6[0-4]|7[15-8]|85)\d{7}$/.test(m[1]);
}

/** Passwords: at least 10 characters (code points). */
export function passwordOk(input) {
  return [...String(input)].length >= 10;
}

/** A byte count with a binary unit from the dictionary: "1,5 ГБ". */
export function bytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return "—";
  const units = ["unit.b", "unit.kb", "unit.mb", "unit.gb", "unit.tb"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  const nf = new Intl.NumberFormat(locale(), { maximumFractionDigits: i === 0 ? 0 : 1 });
  return `${nf.format(v)}\u00a0${t(units[i])}`;
}
