//! Validation and normalisation of everything a customer or the billing system types:
//! IIN/BIN, mobile phones, contract numbers, emails and passwords.
//!
//! Every function is pure and returns either the normalised value or a [`Rejection`] that says
//! what is wrong in words a customer understands (Russian, like the rest of the cabinet). The API
//! layer attaches the field name. The facts (weights, test vectors, phone prefixes, look-alike
//! letters) come from `CABINET.md` §1 and §4.

use unicode_normalization::UnicodeNormalization;

/// Why a value was refused: a machine code plus a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `snake_case` code, e.g. `invalid_iin_bin`, `weak_password`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Whether a valid 12-digit number names a person or an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderKind {
    /// An IIN: an individual (digit 5 is 0–3).
    Individual,
    /// A BIN: a legal entity, branch or sole proprietor (digit 5 is 4–6).
    Legal,
}

/// Validates an IIN or BIN: strips spaces and `-`, requires exactly 12 digits, a valid check
/// digit (two-pass weighted mod 11) and a valid structure, in that order (CABINET.md §1).
/// Returns the 12 digits and the kind.
pub fn iin_bin(input: &str) -> Result<(String, HolderKind), Rejection> {
    let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::new(
            "invalid_iin_bin",
            "ИИН/БИН состоит ровно из 12 цифр",
        ));
    }
    let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
    if !check_digit_ok(&d) {
        return Err(Rejection::new(
            "invalid_iin_bin",
            "ИИН/БИН введён с ошибкой: не сходится контрольная цифра",
        ));
    }
    let kind = structure(&d).map_err(|why| {
        Rejection::new(
            "invalid_iin_bin",
            format!("ИИН/БИН введён с ошибкой: {why}"),
        )
    })?;
    Ok((digits, kind))
}

/// The check digit rule: weights 1..11, and when that gives 10, weights 3..11,1,2; a second 10
/// means the number is never issued.
fn check_digit_ok(d: &[u32]) -> bool {
    const FIRST: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const SECOND: [u32; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];
    let sum = |w: &[u32; 11]| d.iter().zip(w).map(|(a, b)| a * b).sum::<u32>() % 11;
    let mut c = sum(&FIRST);
    if c == 10 {
        c = sum(&SECOND);
    }
    c != 10 && c == d[11]
}

fn structure(d: &[u32]) -> Result<HolderKind, &'static str> {
    let month = d[2] * 10 + d[3];
    if !(1..=12).contains(&month) {
        return Err("месяц в первых цифрах должен быть от 01 до 12");
    }
    match d[4] {
        0..=3 => {
            let century = match d[6] {
                1 | 2 => 1800,
                3 | 4 => 1900,
                5 | 6 => 2000,
                _ => return Err("7-я цифра ИИН должна быть от 1 до 6"),
            };
            let year = i32::try_from(century + d[0] * 10 + d[1]).map_err(|_| "год")?;
            let day = u8::try_from(d[4] * 10 + d[5]).map_err(|_| "день")?;
            let month = time::Month::try_from(u8::try_from(month).map_err(|_| "месяц")?)
                .map_err(|_| "месяц")?;
            time::Date::from_calendar_date(year, month, day)
                .map_err(|_| "первые 6 цифр ИИН не являются датой рождения")?;
            Ok(HolderKind::Individual)
        }
        4..=6 => {
            if d[5] > 3 {
                return Err("6-я цифра БИН должна быть от 0 до 3");
            }
            Ok(HolderKind::Legal)
        }
        _ => Err("5-я цифра должна быть от 0 до 6"),
    }
}

/// Normalises a Kazakhstan mobile number to E.164 (`+77XXXXXXXXX`). Accepts `+7…`, `8…` or
/// `7…` followed by 10 digits, ignoring spaces, brackets and `-`; the 10 national digits must
/// match libphonenumber's KZ mobile pattern `7(?:0[0-25-8]|47|6[0-4]|7[15-8]|85)\d{7}`.
pub fn phone(input: &str) -> Result<String, Rejection> {
    let bad = || {
        Rejection::new(
            "invalid_phone",
            "укажите сотовый номер Казахстана: +7 7xx xxx xx xx",
        )
    };
    let compact: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '(' | ')' | '-' | '\u{a0}'))
        .collect();
    let national = if let Some(rest) = compact.strip_prefix("+7") {
        rest
    } else if compact.len() == 11 && (compact.starts_with('8') || compact.starts_with('7')) {
        &compact[1..]
    } else {
        return Err(bad());
    };
    if national.len() != 10 || !national.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix = &national[..3];
    let mobile = matches!(
        prefix,
        "700"
            | "701"
            | "702"
            | "705"
            | "706"
            | "707"
            | "708"
            | "747"
            | "760"
            | "761"
            | "762"
            | "763"
            | "764"
            | "771"
            | "775"
            | "776"
            | "777"
            | "778"
            | "785"
    );
    if !mobile {
        return Err(bad());
    }
    Ok(format!("+7{national}"))
}

/// Longest contract number billing may send, in characters.
pub const CONTRACT_MAX_CHARS: usize = 64;

/// Checks a contract number as billing or a customer typed it and returns its matching key:
/// NFKC → upper case → Latin look-alikes `ABCEHKMOPTX` mapped to Cyrillic → dashes unified →
/// whitespace and `№` dropped (CABINET.md §4). Allowed characters: Cyrillic and Latin letters,
/// digits, space and `/ - . _ №` (plus the Unicode dashes the key unifies).
pub fn contract_key(input: &str) -> Result<String, Rejection> {
    let trimmed = input.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > CONTRACT_MAX_CHARS {
        return Err(Rejection::new(
            "invalid_contract_number",
            format!("номер договора: от 1 до {CONTRACT_MAX_CHARS} символов"),
        ));
    }
    // `№` first: NFKC would turn it into the letters "No".
    let without_numero: String = trimmed.chars().filter(|c| *c != '№').collect();
    let mut key = String::with_capacity(without_numero.len());
    for c in without_numero.nfkc() {
        let ok = c.is_ascii_alphanumeric()
            || is_cyrillic_letter(c)
            || c.is_whitespace()
            || matches!(c, '/' | '.' | '_')
            || is_dash(c);
        if !ok {
            return Err(Rejection::new(
                "invalid_contract_number",
                format!("номер договора не может содержать символ «{c}»"),
            ));
        }
        if c.is_whitespace() {
            continue;
        }
        if is_dash(c) {
            key.push('-');
            continue;
        }
        for u in c.to_uppercase() {
            key.push(cyrillic_look_alike(u));
        }
    }
    if key.is_empty() {
        return Err(Rejection::new(
            "invalid_contract_number",
            "номер договора пуст",
        ));
    }
    Ok(key)
}

fn is_cyrillic_letter(c: char) -> bool {
    ('\u{0400}'..='\u{04FF}').contains(&c) && c.is_alphabetic()
}

fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}'
    )
}

/// Maps the upper-case Latin letters that look like Cyrillic ones to those Cyrillic letters.
fn cyrillic_look_alike(c: char) -> char {
    match c {
        'A' => 'А',
        'B' => 'В',
        'C' => 'С',
        'E' => 'Е',
        'H' => 'Н',
        'K' => 'К',
        'M' => 'М',
        'O' => 'О',
        'P' => 'Р',
        'T' => 'Т',
        'X' => 'Х',
        other => other,
    }
}

/// Longest email address (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;

/// Checks an email address's syntax (a pragmatic subset of RFC 5322: dot-atom local part,
/// LDH domain labels with at least one dot) and returns it lower-cased.
pub fn email(input: &str) -> Result<String, Rejection> {
    let bad = |why: &str| Rejection::new("invalid_email", format!("некорректный email: {why}"));
    let e = input.trim().to_lowercase();
    if e.is_empty() {
        return Err(bad("пустое значение"));
    }
    if e.len() > EMAIL_MAX {
        return Err(bad("длиннее 254 символов"));
    }
    let Some((local, domain)) = e.rsplit_once('@') else {
        return Err(bad("нет символа @"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok {
        return Err(bad("недопустимая часть до @"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    if !domain_ok {
        return Err(bad("недопустимый домен"));
    }
    Ok(e)
}

/// Shortest password, in characters (CONTRACT §5).
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest password, in characters (at most 512 bytes): Argon2 work must not be a function of
/// attacker-chosen size. Characters, like the minimum, so that the OpenAPI `maxLength` states it.
pub const PASSWORD_MAX_CHARS: usize = 128;

/// The password policy: at least 10 characters, at most 128, not equal to the login
/// (case-insensitively).
pub fn password(password: &str, login: &str) -> Result<(), Rejection> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(Rejection::new(
            "weak_password",
            format!("пароль должен содержать не менее {PASSWORD_MIN_CHARS} символов"),
        ));
    }
    if password.chars().count() > PASSWORD_MAX_CHARS {
        return Err(Rejection::new(
            "weak_password",
            format!("пароль не может быть длиннее {PASSWORD_MAX_CHARS} символов"),
        ));
    }
    if password.trim().to_lowercase() == login.trim().to_lowercase() {
        return Err(Rejection::new(
            "weak_password",
            "пароль не может совпадать с логином",
        ));
    }
    Ok(())
}

/// Largest account number (лицевой счёт) length, in digits.
pub const ACCOUNT_NUMBER_MAX: usize = 20;

/// An account number (лицевой счёт, also the owner's login): 1–20 ASCII digits, leading zeros
/// kept as billing has them.
pub fn account_number(input: &str) -> Result<String, Rejection> {
    let t = input.trim();
    if t.is_empty() || t.len() > ACCOUNT_NUMBER_MAX || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::new(
            "invalid_account_number",
            format!("номер лицевого счёта: от 1 до {ACCOUNT_NUMBER_MAX} цифр"),
        ));
    }
    Ok(t.to_owned())
}

/// Free text (names, positions, descriptions): trimmed, at most `max` characters, no control
/// characters. Empty input gives `None`.
pub fn optional_text(input: Option<&str>, max: usize) -> Result<Option<String>, Rejection> {
    let Some(raw) = input else { return Ok(None) };
    let t = raw.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.chars().count() > max {
        return Err(Rejection::new(
            "too_long",
            format!("не длиннее {max} символов"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Rejection::new(
            "invalid_text",
            "недопустимые управляющие символы",
        ));
    }
    Ok(Some(t.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID_BINS: [&str; 5] = [
        "940140000385",
        "990140004654",
        "950341000052",
        "070941024691",
        "961141000023",
    ];
    const VALID_IINS: [&str; 6] = [
        "871008401427",
        "760212350620",
        "800416300257",
        "680503450037",
        "061211600012",
        "900101300811",
    ];

    #[test]
    fn cabinet_valid_bins_are_accepted_as_legal_entities() {
        for b in VALID_BINS {
            assert_eq!(iin_bin(b), Ok((b.to_owned(), HolderKind::Legal)), "{b}");
        }
    }

    #[test]
    fn cabinet_valid_iins_are_accepted_as_individuals() {
        for i in VALID_IINS {
            assert_eq!(
                iin_bin(i),
                Ok((i.to_owned(), HolderKind::Individual)),
                "{i}"
            );
        }
    }

    #[test]
    fn second_pass_vectors_really_need_the_second_pass() {
        for v in ["961141000023", "061211600012", "900101300811"] {
            let d: Vec<u32> = v.bytes().map(|b| u32::from(b - b'0')).collect();
            let first: u32 = d
                .iter()
                .take(11)
                .zip(1..=11u32)
                .map(|(a, w)| a * w)
                .sum::<u32>()
                % 11;
            assert_eq!(first, 10, "{v} must hit the second pass");
        }
    }

    #[test]
    fn cabinet_invalid_vectors_are_rejected() {
        for v in [
            "821214240092",
            "940140000386",
            "871008401428",
            "949940000385",
            "940190000385",
            "940149000385",
            "901301300017",
        ] {
            let err = iin_bin(v).expect_err(v);
            assert_eq!(err.code, "invalid_iin_bin");
        }
    }

    #[test]
    fn checksum_is_checked_before_structure() {
        // 901301300017 has a good check digit but month 13: the message names the structure.
        assert!(iin_bin("901301300017")
            .expect_err("month 13")
            .message
            .contains("месяц"));
        assert!(iin_bin("940140000386")
            .expect_err("bad digit")
            .message
            .contains("контрольная"));
    }

    #[test]
    fn iin_bin_ignores_spaces_and_dashes_but_requires_exactly_12_digits() {
        assert!(iin_bin("940 140-000 385").is_ok());
        assert!(iin_bin("94014000038").is_err());
        assert!(iin_bin("9401400003850").is_err());
        assert!(iin_bin("94014000038a").is_err());
        assert!(iin_bin("").is_err());
        assert!(
            iin_bin("９４０１４０００００３８５").is_err(),
            "fullwidth digits are not digits"
        );
    }

    fn check_digit_of(first11: &[u32]) -> Option<u32> {
        let w1: u32 = first11
            .iter()
            .zip(1..=11u32)
            .map(|(a, w)| a * w)
            .sum::<u32>()
            % 11;
        if w1 != 10 {
            return Some(w1);
        }
        let w2 = [3u32, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];
        let c = first11.iter().zip(w2).map(|(a, w)| a * w).sum::<u32>() % 11;
        (c != 10).then_some(c)
    }

    proptest! {
        /// Any structurally valid IIN with the computed check digit is accepted, and every other
        /// last digit is rejected.
        #[test]
        fn generated_iins_validate_exactly_with_their_check_digit(
            yy in 0u32..100, mm in 1u32..=12, dd in 1u32..=28, c in 1u32..=6, serial in 0u32..10_000
        ) {
            let mut d = vec![yy / 10, yy % 10, mm / 10, mm % 10, dd / 10, dd % 10, c];
            d.extend([serial / 1000, serial / 100 % 10, serial / 10 % 10, serial % 10]);
            let text: String = d.iter().map(|x| char::from_digit(*x, 10).expect("a digit")).collect();
            match check_digit_of(&d) {
                Some(cd) => {
                    for last in 0..10u32 {
                        let full = format!("{text}{last}");
                        prop_assert_eq!(iin_bin(&full).is_ok(), last == cd, "{}", full);
                    }
                }
                None => {
                    for last in 0..10u32 {
                        let full = format!("{text}{last}");
                        prop_assert!(iin_bin(&full).is_err(), "{}", full);
                    }
                }
            }
        }

        /// Changing any single digit of a valid number never keeps it valid with the same
        /// structure and the same check digit unless the check digit also matches.
        #[test]
        fn single_digit_changes_of_a_valid_bin_are_caught(pos in 0usize..11, delta in 1u32..10) {
            let base: Vec<u32> = "940140000385".bytes().map(|b| u32::from(b - b'0')).collect();
            let mut d = base.clone();
            d[pos] = (d[pos] + delta) % 10;
            let text: String = d.iter().map(|x| char::from_digit(*x, 10).expect("a digit")).collect();
            let expected_ok = check_digit_of(&d[..11]) == Some(d[11]) && structure(&d).is_ok();
            prop_assert_eq!(iin_bin(&text).is_ok(), expected_ok);
        }
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        for input in [
            "+7 701 234 56 78",
            "8 (701) 234-56-78",
            "77012345678",
            "+77012345678",
        ] {
            assert_eq!(phone(input).as_deref(), Ok("+77012345678"), "{input}");
        }
        assert_eq!(phone("8 747 000 00 00").as_deref(), Ok("+77470000000"));
    }

    #[test]
    fn landlines_and_foreign_numbers_are_not_mobile_phones() {
        for input in [
            "+7 727 237 77 77",
            "+7 903 123 45 67",
            "7012345678",
            "+1 202 555 0100",
            "",
            "+7701234567",
        ] {
            assert!(phone(input).is_err(), "{input}");
        }
    }

    #[test]
    fn contract_key_maps_latin_look_alikes_to_cyrillic() {
        let cyr = contract_key("КТС-КТС-14 644 40/2/ ДП-11").expect("valid");
        let lat = contract_key("KTC-KTC-14 644 40/2/ ДП-11").expect("valid");
        let lower = contract_key("ктс-ктс-14644 40/2/дп-11").expect("valid");
        assert_eq!(cyr, "КТС-КТС-1464440/2/ДП-11");
        assert_eq!(lat, cyr);
        assert_eq!(lower, cyr);
    }

    #[test]
    fn contract_key_drops_numero_sign_and_unifies_dashes() {
        assert_eq!(contract_key("№ 4445/10").expect("valid"), "4445/10");
        assert_eq!(
            contract_key("ДП\u{2013}11").expect("valid"),
            contract_key("ДП-11").expect("valid")
        );
        assert_eq!(contract_key("ДП\u{2212}11").expect("valid"), "ДП-11");
        assert_eq!(contract_key("ＡＢ１２").expect("fullwidth NFKC"), "АВ12");
    }

    #[test]
    fn contract_key_rejects_foreign_characters_and_bad_lengths() {
        assert!(contract_key("").is_err());
        assert!(contract_key("   ").is_err());
        assert!(contract_key("№").is_err());
        assert!(contract_key("12;DROP").is_err());
        assert!(contract_key("αβγ").is_err(), "Greek is not allowed");
        assert!(contract_key(&"1".repeat(65)).is_err());
        assert!(contract_key(&"1".repeat(64)).is_ok());
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            email(" Aigerim.K@Example.KZ ").as_deref(),
            Ok("aigerim.k@example.kz")
        );
        for bad in [
            "",
            "a",
            "a@",
            "@b.kz",
            "a@b",
            "a..b@c.kz",
            "a@-b.kz",
            "a b@c.kz",
            "a@b.12",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        let long = format!("{}@{}.kz", "a".repeat(64), "b".repeat(200));
        assert!(email(&long).is_err(), "over 254");
    }

    #[test]
    fn password_policy_length_and_login() {
        assert!(password("short", "x").is_err());
        assert!(password("exactly10!", "x").is_ok());
        assert!(
            password("пароль1234", "x").is_ok(),
            "10 characters, more bytes"
        );
        assert!(password(&"a".repeat(129), "x").is_err());
        assert_eq!(
            password("1234567890", "1234567890")
                .expect_err("login")
                .code,
            "weak_password"
        );
        assert!(password("User@Example.kz", "user@example.kz").is_err());
    }

    #[test]
    fn account_numbers_are_digits() {
        assert_eq!(account_number(" 004445 ").as_deref(), Ok("004445"));
        assert!(account_number("44-45").is_err());
        assert!(account_number("").is_err());
        assert!(account_number(&"1".repeat(21)).is_err());
    }
}
