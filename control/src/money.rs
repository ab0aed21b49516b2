//! Money: integer tiyn everywhere (1 ₸ = 100 tiyn, CONTRACT §5), formatted as tenge with two
//! decimals only at the gateway edge ("1500.00") and on the web page.
//!
//! Why integers: a float cannot hold 0.10 ₸ exactly, and a balance that drifts by a tiyn per
//! thousand payments is a support call. Parsing a decimal string never goes through `f64`.

use crate::validate::Rejection;

/// Tiyn per tenge.
pub const TIYN_PER_TENGE: i64 = 100;

/// Formats tiyn as tenge with exactly two decimals and a dot, the form Halyk ePay expects for
/// `amount` ("1500.00"); negative amounts keep their sign ("-0.05").
pub fn format_tenge(tiyn: i64) -> String {
    let sign = if tiyn < 0 { "-" } else { "" };
    let abs = tiyn.unsigned_abs();
    let per = TIYN_PER_TENGE.unsigned_abs();
    format!("{sign}{}.{:02}", abs / per, abs % per)
}

/// Formats tiyn for people: tenge with thin groups and a comma, "1 500,00 ₸" (the web page and
/// the PDF; never JSON).
pub fn format_tenge_human(tiyn: i64) -> String {
    let sign = if tiyn < 0 { "-" } else { "" };
    let abs = tiyn.unsigned_abs();
    let per = TIYN_PER_TENGE.unsigned_abs();
    let whole = (abs / per).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push('\u{a0}');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped},{:02}\u{a0}₸", abs % per)
}

/// Parses a tenge amount as a gateway sends it ("1500", "1500.5", "1500.00", also "1500,00")
/// into tiyn. Refuses signs, exponents, empty parts, more than two decimals (a fraction of a
/// tiyn) and values that do not fit in `i64` tiyn.
pub fn parse_tenge(input: &str) -> Result<i64, Rejection> {
    let s = input.trim();
    let bad = || Rejection {
        code: "bad_amount",
        message: format!("сумма «{s}» не в формате тенге с не более чем двумя знаками (1500.00)"),
    };
    let (whole, frac) = match s.split_once(['.', ',']) {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.len() != whole.len() && frac.is_empty()) {
        return Err(bad());
    }
    if frac.len() > 2 {
        return Err(Rejection {
            code: "bad_amount",
            message: format!("сумма «{s}» содержит доли тиына: не более двух знаков после точки"),
        });
    }
    let too_big = || Rejection {
        code: "bad_amount",
        message: format!("сумма «{s}» слишком велика"),
    };
    let whole: i64 = whole.parse().map_err(|_| too_big())?;
    let frac_tiyn: i64 = match frac.len() {
        0 => 0,
        1 => i64::from(frac.as_bytes()[0] - b'0') * 10,
        _ => frac.parse().map_err(|_| bad())?,
    };
    whole
        .checked_mul(TIYN_PER_TENGE)
        .and_then(|t| t.checked_add(frac_tiyn))
        .ok_or_else(too_big)
}

/// Checks a top-up amount in tiyn against the configured bounds (`payments.min_topup_tiyn` ..=
/// `payments.max_topup_tiyn`); zero and negatives are always refused.
pub fn check_topup(amount_tiyn: i64, min_tiyn: i64, max_tiyn: i64) -> Result<i64, Rejection> {
    if amount_tiyn <= 0 {
        return Err(Rejection {
            code: "bad_amount",
            message: "сумма пополнения должна быть больше нуля".to_owned(),
        });
    }
    if amount_tiyn < min_tiyn {
        return Err(Rejection {
            code: "bad_amount",
            message: format!(
                "минимальная сумма пополнения — {}",
                format_tenge_human(min_tiyn)
            ),
        });
    }
    if amount_tiyn > max_tiyn {
        return Err(Rejection {
            code: "bad_amount",
            message: format!(
                "максимальная сумма пополнения — {}",
                format_tenge_human(max_tiyn)
            ),
        });
    }
    Ok(amount_tiyn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_two_decimals_with_a_dot_for_the_gateway() {
        assert_eq!(format_tenge(150_000), "1500.00");
        assert_eq!(format_tenge(5), "0.05");
        assert_eq!(format_tenge(-5), "-0.05");
        assert_eq!(format_tenge(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn formats_grouped_tenge_for_people() {
        assert_eq!(
            format_tenge_human(150_000_000),
            "1\u{a0}500\u{a0}000,00\u{a0}₸"
        );
        assert_eq!(format_tenge_human(99), "0,99\u{a0}₸");
    }

    #[test]
    fn parses_gateway_amounts() {
        assert_eq!(parse_tenge("1500.00"), Ok(150_000));
        assert_eq!(parse_tenge("1500"), Ok(150_000));
        assert_eq!(parse_tenge("1500.5"), Ok(150_050));
        assert_eq!(parse_tenge(" 0,07 "), Ok(7));
    }

    #[test]
    fn refuses_fractions_of_a_tiyn_signs_and_garbage() {
        for s in [
            "1500.001", "-1", "+1", "1e3", "", ".5", "5.", "1 500", "NaN", "1.2.3", "١٢",
        ] {
            assert!(parse_tenge(s).is_err(), "{s:?} accepted");
        }
        assert!(parse_tenge("99999999999999999999").is_err());
        assert!(parse_tenge("92233720368547758.08").is_err());
        assert_eq!(parse_tenge("92233720368547758.07"), Ok(i64::MAX));
    }

    #[test]
    fn topup_bounds_refuse_zero_negative_and_over_the_maximum() {
        assert!(check_topup(0, 1, 10).is_err());
        assert!(check_topup(-5, -10, 10).is_err());
        assert!(check_topup(11, 1, 10).is_err());
        assert!(check_topup(0, 1, 10).is_err());
        assert!(check_topup(1, 2, 10).is_err());
        assert_eq!(check_topup(10, 1, 10), Ok(10));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(t in 0i64..=i64::MAX) {
            prop_assert_eq!(parse_tenge(&format_tenge(t)), Ok(t));
        }
    }
}
