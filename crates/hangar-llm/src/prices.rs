//! The default price table: list prices of common OpenAI and Anthropic
//! models, so metered cost is not $0 when the config names no `prices:`.
//!
//! These are the providers' published list prices per million tokens as of
//! [`DEFAULT_PRICES_AS_OF`]; they drift, and discounts (batch, cached input,
//! negotiated rates) are not modelled. A provider's own `prices:` entries in
//! the server config always win over this table.
//!
//! Matching is by provider-local model name, case-insensitively: an exact
//! entry, else the longest entry the name starts with followed by `-`
//! (a date or variant suffix), so `claude-sonnet-4-20250514` is priced as
//! `claude-sonnet-4` and `gpt-4o-mini-2024-07-18` as `gpt-4o-mini` (not
//! `gpt-4o`: the longer entry wins).

use crate::ModelPrice;
use std::collections::BTreeMap;

/// When the prices of [`DEFAULT_PRICES`] were last checked.
pub const DEFAULT_PRICES_AS_OF: &str = "2025-11";

/// `(model name prefix, input $/Mtok, output $/Mtok)`.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o1", 15.00, 60.00),
    ("o1-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("o3-mini", 1.10, 4.40),
    ("o3-pro", 20.00, 80.00),
    ("o4-mini", 1.10, 4.40),
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5-pro", 15.00, 120.00),
    ("gpt-5.1", 1.25, 10.00),
    // Anthropic
    ("claude-opus-4", 15.00, 75.00),
    ("claude-opus-4-1", 15.00, 75.00),
    ("claude-opus-4-5", 5.00, 25.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-sonnet-4-5", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
];

/// The default price of a provider-local model name (see the module docs
/// for the matching rule); `None` for models the table does not know, such
/// as self-hosted ones.
pub fn default_price(model: &str) -> Option<ModelPrice> {
    lookup(
        DEFAULT_PRICES
            .iter()
            .map(|(name, input, output)| (*name, price(*input, *output))),
        model,
    )
}

/// The price of `model` in `table` by the same rule as [`default_price`].
pub(crate) fn lookup_in(table: &BTreeMap<String, ModelPrice>, model: &str) -> Option<ModelPrice> {
    lookup(table.iter().map(|(k, v)| (k.as_str(), *v)), model)
}

fn price(input_per_mtok: f64, output_per_mtok: f64) -> ModelPrice {
    ModelPrice {
        input_per_mtok,
        output_per_mtok,
    }
}

fn lookup<'a>(
    entries: impl Iterator<Item = (&'a str, ModelPrice)>,
    model: &str,
) -> Option<ModelPrice> {
    let model = model.to_ascii_lowercase();
    let mut best: Option<(usize, ModelPrice)> = None;
    for (name, price) in entries {
        let name = name.to_ascii_lowercase();
        let matches = match model.strip_prefix(name.as_str()) {
            Some("") => return Some(price),
            Some(rest) => rest.starts_with('-'),
            None => false,
        };
        if matches && best.is_none_or(|(len, _)| name.len() > len) {
            best = Some((name.len(), price));
        }
    }
    best.map(|(_, price)| price)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(model: &str) -> Option<f64> {
        default_price(model).map(|p| p.input_per_mtok)
    }

    #[test]
    fn default_prices_match_names_with_date_and_variant_suffixes() {
        assert_eq!(input("claude-sonnet-4-20250514"), Some(3.00));
        assert_eq!(input("claude-sonnet-4-5"), Some(3.00));
        assert_eq!(input("claude-opus-4-20250514"), Some(15.00));
        assert_eq!(input("claude-opus-4-5-20251101"), Some(5.00));
        assert_eq!(input("claude-3-5-haiku-latest"), Some(0.80));
        assert_eq!(input("claude-haiku-4-5-20251001"), Some(1.00));
        // The longest matching entry wins: a mini is not priced as its big sibling.
        assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2.50));
        assert_eq!(input("gpt-4.1-nano"), Some(0.10));
        assert_eq!(input("o3-pro"), Some(20.00));
        assert_eq!(input("o4-mini-2025-04-16"), Some(1.10));
        assert_eq!(input("gpt-5-codex"), Some(1.25));
        assert_eq!(input("GPT-5-Mini"), Some(0.25));
        let gpt5 = default_price("gpt-5").unwrap();
        assert_eq!(gpt5.output_per_mtok, 10.00);
        // A prefix only counts at a `-` boundary, and unknown models are unpriced.
        assert_eq!(input("gpt-5x"), None);
        assert_eq!(input("o30"), None);
        assert_eq!(input("Qwen/Qwen2.5-Coder-32B"), None);
        assert_eq!(input("test-model"), None);
    }

    #[test]
    fn every_default_entry_is_reachable_and_positive() {
        for (name, input_price, output_price) in DEFAULT_PRICES {
            assert!(
                *input_price > 0.0 && *output_price >= *input_price,
                "{name}"
            );
            assert_eq!(
                default_price(name).map(|p| p.input_per_mtok),
                Some(*input_price),
                "{name}"
            );
        }
    }
}
