//! Parses Kubernetes resource quantities ("500m", "2", "128Mi", "1.5Gi", "1e3") into plain numbers, for
//! comparing node capacity with variant requests during placement.

use thiserror::Error;

/// A quantity that is not in Kubernetes' format.
#[derive(Debug, Error, PartialEq)]
#[error("{0:?} is not a Kubernetes quantity")]
pub struct QuantityError(pub String);

/// The value of a quantity in base units (cores, bytes).
pub fn parse(q: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(q.to_string());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (num, suffix) = match suffix.strip_prefix(['e', 'E']) {
        // Decimal exponent ("1e3"): the whole string is a float.
        Some(exp)
            if !exp.is_empty()
                && exp
                    .trim_start_matches(['+', '-'])
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
        {
            (s, "")
        }
        _ => (num, suffix),
    };
    let value: f64 = num.parse().map_err(|_| err())?;
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
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return Err(err()),
    };
    let v = value * scale;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory_forms() {
        let cases = [
            ("500m", 0.5),
            ("2", 2.0),
            ("0.25", 0.25),
            ("128Mi", 134_217_728.0),
            ("1Gi", 1_073_741_824.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("4k", 4000.0),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for q in ["", "abc", "1Qi", "-1", "1.2.3", "Mi", "1e", "NaN"] {
            assert!(parse(q).is_err(), "{q}");
        }
    }
}
