//! The first element of a JSON array, and nothing more (T-17).
//!
//! Only the first element of the dry-run array is used, so only it becomes a [`Value`]: the others are
//! checked as JSON and skipped ([`IgnoredAny`]). An array of millions of small values therefore costs no
//! memory, where a `Vec<Value>` would take 16 to 32 times the log's size. The first element itself is
//! built within [`RESULT_MEMORY_LIMIT`]: past it, the rest of the element is checked and skipped too and
//! the array is reported as [`First::TooLarge`].

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Most memory the first element may take once parsed (estimated as it is built: each value, string and
/// key counted). A real result is a few KiB; a template status that holds it must fit in one Kubernetes
/// object (about 1.5 MiB), so a result this large could never be stored anyway.
pub const RESULT_MEMORY_LIMIT: usize = 4 * 1024 * 1024;

/// Estimated cost of one value, whatever it holds.
const VALUE_COST: usize = size_of::<Value>();
/// Estimated cost of an object key, besides its bytes.
const KEY_COST: usize = size_of::<String>();

/// What a JSON array starts with.
#[derive(Debug)]
pub(crate) enum First {
    /// The array is empty.
    Empty,
    /// Its first element.
    Value(Value),
    /// The first element is valid JSON but would take more than [`RESULT_MEMORY_LIMIT`].
    TooLarge,
}

/// `bytes` as exactly one JSON array: what it starts with.
pub(crate) fn first_element(bytes: &[u8]) -> Result<First, serde_json::Error> {
    let budget = Budget {
        left: Cell::new(RESULT_MEMORY_LIMIT),
        exceeded: Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let first = (&mut de).deserialize_seq(FirstElement { budget: &budget })?;
    de.end()?;
    Ok(match first {
        None => First::Empty,
        Some(_) if budget.exceeded.get() => First::TooLarge,
        Some(v) => First::Value(v),
    })
}

struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Budget {
    /// Takes `cost` from what is left; `false` (for good) once it runs out.
    fn charge(&self, cost: usize) -> bool {
        if self.exceeded.get() {
            return false;
        }
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.exceeded.set(true);
                false
            }
        }
    }
}

/// Visits the array: element 0 as a bounded [`Value`], the rest skipped.
struct FirstElement<'a> {
    budget: &'a Budget,
}

impl<'de> Visitor<'de> for FirstElement<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element_seed(Bounded {
            budget: self.budget,
        })?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
}

/// A [`Value`] built while the budget lasts; once it is exceeded, the rest is only checked as JSON
/// (what was built is dropped) and the value returned is `null`.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Budget,
}

impl Bounded<'_> {
    fn scalar(self, v: Value) -> Value {
        if self.budget.charge(VALUE_COST) {
            v
        } else {
            Value::Null
        }
    }

    fn string(self, s: &str) -> Value {
        if self.budget.charge(VALUE_COST + s.len()) {
            Value::String(s.to_owned())
        } else {
            Value::Null
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(self.scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(self.scalar(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(self.scalar(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(self.scalar(Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(self.string(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(self.scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(self.scalar(Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        if !self.budget.charge(VALUE_COST) {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Null);
        }
        while let Some(item) = seq.next_element_seed(self)? {
            if self.budget.exceeded.get() {
                drop(items);
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Value::Null);
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Map::new();
        let mut exceeded = !self.budget.charge(VALUE_COST);
        while !exceeded {
            let Some(key) = map.next_key::<String>()? else {
                return Ok(Value::Object(entries));
            };
            exceeded = !self.budget.charge(KEY_COST + key.len());
            let value = map.next_value_seed(self)?;
            exceeded |= self.budget.exceeded.get();
            entries.insert(key, value);
        }
        drop(entries);
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        match first_element(text.as_bytes()).unwrap() {
            First::Value(v) => v,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn the_first_element_is_the_value_serde_json_makes() {
        for element in [
            r#"{"a":[1,-2,3.5,-0.0,1e300,"x\n\u00e9",null,true,false,{}],"b":{"c":[]}}"#,
            r#"{"dup":1,"dup":2}"#,
            "18446744073709551615",
            r#""plain""#,
            "[[[]]]",
        ] {
            let expected: Value = serde_json::from_str(element).unwrap();
            assert_eq!(value(&format!("[{element}, 1, [2], {{}}]")), expected);
        }
        assert!(matches!(first_element(b"[ ]").unwrap(), First::Empty));
    }

    #[test]
    fn the_other_elements_are_checked_but_not_kept() {
        assert!(first_element(b"[1, 2, [3, {\"a\": }]]").is_err());
        assert!(first_element(b"[1, 2] x").is_err());
        assert_eq!(value("[1, [[[[[[]]]]]], {\"k\": [\"v\"]}]"), Value::from(1));
    }

    #[test]
    fn a_first_element_over_the_budget_is_too_large_once_the_array_is_valid() {
        let n = RESULT_MEMORY_LIMIT / VALUE_COST + 1;
        let numbers = vec!["1"; n].join(",");
        let array = format!("[{{\"profile\": {{\"x\": [{numbers}]}}, \"models\": []}}, 2]");
        assert!(matches!(
            first_element(array.as_bytes()).unwrap(),
            First::TooLarge
        ));
        let long = "x".repeat(RESULT_MEMORY_LIMIT);
        let array = format!("[{{\"k\": \"{long}\"}}]");
        assert!(matches!(
            first_element(array.as_bytes()).unwrap(),
            First::TooLarge
        ));
        // Still JSON first: a broken array is broken, however large its first element.
        let broken = format!("[{{\"profile\": [{numbers}]}}, ");
        assert!(first_element(broken.as_bytes()).is_err());
    }
}
