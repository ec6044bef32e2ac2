//! Memory sizes: Kubernetes quantities and the GPU labeller's VRAM label.

use thiserror::Error;

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid size {value:?}: {why}")]
pub struct SizeError {
    pub value: String,
    pub why: &'static str,
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// `digits[.digits]` times `num / den`, rounded down, in bytes.
fn scale(value: &str, number: &str, num: u128, den: u128) -> Result<u64, SizeError> {
    let err = |why| SizeError {
        value: value.to_string(),
        why,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return Err(err("not a number"));
    }
    let digits: u128 = format!("{int}{frac}")
        .parse()
        .map_err(|_| err("not a number"))?;
    let frac_den = 10u128.pow(frac.len() as u32);
    let bytes = digits.checked_mul(num).ok_or_else(|| err("too large"))? / (den * frac_den);
    u64::try_from(bytes).map_err(|_| err("too large"))
}

/// Parses a Kubernetes quantity (`128Gi`, `192G`, `1.5Ti`, `2e9`, `1000`) into bytes, rounded down.
pub fn parse_quantity(q: &str) -> Result<u64, SizeError> {
    let s = q.trim();
    let (number, suffix) = split_number(s);
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().map_err(|_| SizeError {
                value: q.to_string(),
                why: "bad exponent",
            })?;
            if exp > 30 {
                return Err(SizeError {
                    value: q.to_string(),
                    why: "too large",
                });
            }
            (10u128.pow(exp), 1)
        }
        _ => {
            return Err(SizeError {
                value: q.to_string(),
                why: "unknown suffix",
            });
        }
    };
    scale(q, number, num, den)
}

/// Parses the `amd.com/gpu.vram` label: `G`/`T` (and `M`) mean GiB/TiB (MiB), binary quantities
/// (`192Gi`) are accepted, and a bare integer is MiB.
pub fn parse_vram_label(v: &str) -> Result<u64, SizeError> {
    let s = v.trim();
    let (number, suffix) = split_number(s);
    match suffix {
        "" => scale(v, number, 1 << 20, 1),
        "M" => scale(v, number, 1 << 20, 1),
        "G" => scale(v, number, 1 << 30, 1),
        "T" => scale(v, number, 1 << 40, 1),
        _ => parse_quantity(s),
    }
}

/// Formats bytes for messages: whole GiB when exact (`192Gi`), else MiB.
pub fn format_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else {
        format!("{}Mi", bytes >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const GI: u64 = 1 << 30;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("128Gi"), Ok(128 * GI));
        assert_eq!(parse_quantity("1.5Ti"), Ok(1536 * GI));
        assert_eq!(parse_quantity("192G"), Ok(192_000_000_000));
        assert_eq!(parse_quantity("2e9"), Ok(2_000_000_000));
        assert_eq!(parse_quantity("1000"), Ok(1000));
        assert!(parse_quantity("12Zi").is_err());
        assert!(parse_quantity("").is_err());
        assert!(parse_quantity("99999999999Ei").is_err());
    }

    #[test]
    fn vram_labels() {
        // T-07: G/T are GiB/TiB, quantities accepted, a bare integer is MiB.
        assert_eq!(parse_vram_label("192G"), Ok(192 * GI));
        assert_eq!(parse_vram_label("192Gi"), Ok(192 * GI));
        assert_eq!(parse_vram_label("1T"), Ok(1024 * GI));
        assert_eq!(parse_vram_label("196608"), Ok(192 * GI));
        assert!(parse_vram_label("lots").is_err());
        assert_eq!(format_bytes(192 * GI), "192Gi");
    }
}
