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

/// A quantity's value as a float (enough precision to compare requests with maxima and to
/// size cgroups); `None` when it is not a quantity ([`check`] says why).
pub fn value(text: &str) -> Option<f64> {
    let text = text.trim();
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    let base: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(base * scale)
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
