//! The cabinet's validators on arbitrary text: IIN/BIN, contract numbers, phones, emails,
//! passwords, account numbers and free text. No panics; the values they return validate
//! again to themselves (normalisation is idempotent) where that is their contract.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// `qorgan_control::validate`, compiled here from its source file (it is pure and uses only
/// `unicode-normalization` and `time`), so the fuzz build does not build the whole control
/// crate. Its `#[cfg(test)]` tests are left out.
#[path = "../../control/src/validate.rs"]
#[allow(dead_code, unreachable_pub)]
mod validate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((digits, kind)) = validate::iin_bin(text) {
        assert_eq!(digits.len(), 12);
        assert_eq!(validate::iin_bin(&digits), Ok((digits.clone(), kind)));
    }
    // The key of a contract number may be longer than the input (NFKC, `ß` → `SS`), so it is
    // not fed back in.
    let _ = validate::contract_key(text);
    if let Ok(p) = validate::phone(text) {
        assert!(p.starts_with("+7") && p.len() == 12, "{p}");
        assert_eq!(validate::phone(&p), Ok(p.clone()));
    }
    if let Ok(e) = validate::email(text) {
        assert!(e.len() <= validate::EMAIL_MAX);
        assert_eq!(validate::email(&e), Ok(e.clone()));
    }
    if let Ok(a) = validate::account_number(text) {
        assert_eq!(validate::account_number(&a), Ok(a.clone()));
    }
    let _ = validate::optional_text(Some(text), 64);
    // password: the first line against the rest as the login.
    let (password, login) = text.split_once('\n').unwrap_or((text, ""));
    let _ = validate::password(password, login);
});
