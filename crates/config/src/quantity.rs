//! Kubernetes resource quantity syntax (`500m`, `1Gi`, `1e3`), checked as the API server parses it.

/// Checks that `value` is a Kubernetes quantity: an optional sign, a decimal number, then an
/// optional binary suffix (`Ki` … `Ei`), decimal suffix (`n`, `u`, `m`, `k`, `M` … `E`) or exponent.
pub fn check(value: &str) -> Result<(), String> {
    let body = value.strip_prefix(['+', '-']).unwrap_or(value);
    let number_len = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err("expected a number with an optional unit, such as \"500m\", \"2\" or \"1Gi\""
            .to_owned());
    }
    let valid_suffix = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()));
    if valid_suffix {
        Ok(())
    } else {
        Err(format!(
            "unknown unit {suffix:?} (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepts_what_the_api_server_accepts() {
        for ok in ["1", "500m", "0.5", "1Gi", "100Mi", "2k", "1e3", "1E-2", "+1", ".5", "20Gi"] {
            assert_eq!(super::check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in ["", "Gi", "1GB", "1 Gi", "1..2", "abc", "1e", "1mi"] {
            assert!(super::check(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
