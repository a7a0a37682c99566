//! Provider configuration and `provider/model` resolution.

use crate::anthropic::{AnthropicConfig, AnthropicProvider, DEFAULT_ANTHROPIC_BASE_URL};
use crate::openai::{DEFAULT_OPENAI_BASE_URL, OpenAiConfig, OpenAiProvider};
use crate::{LlmError, ModelProvider, SecretString};
use hangar_protocol::llm::{ModelEntry, Usage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Providers by name, as they appear in the server config:
///
/// ```yaml
/// openai:
///   kind: openai
///   api_key_env: OPENAI_API_KEY
///   models: [gpt-5, gpt-5-mini]
/// local:
///   kind: openai
///   base_url: http://127.0.0.1:8000/v1
///   models: [Qwen/Qwen2.5-Coder-32B-Instruct]
/// anthropic:
///   kind: anthropic
///   api_key: sk-ant-…
///   default_model: claude-sonnet-4-5
/// ```
pub type ProvidersConfig = BTreeMap<String, ProviderConfig>;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (OpenAI and every compatible server).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL; the kind's public API when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// API key, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretString>,
    /// Environment variable holding the API key (used when `api_key` is
    /// absent; an unset variable is a configuration error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Provider-local model names advertised in model listings. Requests
    /// may name other models too; the provider decides.
    #[serde(default)]
    pub models: Vec<String>,
    /// Provider-local model name used when a run names no model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Prices per provider-local model name, for metering cost; they win
    /// over the built-in list prices ([`crate::DEFAULT_PRICES`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, ModelPrice>,
}

/// What a model costs, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Dollars per million prompt (input) tokens.
    pub input_per_mtok: f64,
    /// Dollars per million completion (output) tokens.
    pub output_per_mtok: f64,
}

impl ModelPrice {
    /// The cost of `usage` in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

impl ProviderConfig {
    /// A config of `kind` with everything else unset.
    pub fn new(kind: ProviderKind) -> Self {
        ProviderConfig {
            kind,
            base_url: None,
            api_key: None,
            api_key_env: None,
            models: Vec::new(),
            default_model: None,
            prices: BTreeMap::new(),
        }
    }
}

/// Model used by [`ProviderRegistry::default_model`] for a provider named
/// `openai` without its own default.
pub const OPENAI_DEFAULT_MODEL: &str = "gpt-5";

/// Model used by [`ProviderRegistry::default_model`] for a provider named
/// `anthropic` without its own default.
pub const ANTHROPIC_DEFAULT_MODEL: &str = "claude-sonnet-4-5";

struct Entry {
    provider: Arc<dyn ModelProvider>,
    models: Vec<String>,
    default_model: Option<String>,
    prices: BTreeMap<String, ModelPrice>,
}

/// Maps `provider/model` ids to providers.
///
/// A model id is the provider name, a `/`, and the provider-local model name,
/// which may itself contain `/` (`local/Qwen/Qwen2.5-Coder` is model
/// `Qwen/Qwen2.5-Coder` of provider `local`).
#[derive(Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        ProviderRegistry::default()
    }

    /// Builds every provider of `config`, reading `api_key_env` variables
    /// from the process environment.
    pub fn from_config(config: &ProvidersConfig) -> Result<Self, LlmError> {
        Self::from_config_with_env(config, |name| std::env::var(name).ok())
    }

    /// [`ProviderRegistry::from_config`] with environment lookups through
    /// `env` (tests pass a map instead of mutating the process environment).
    pub fn from_config_with_env(
        config: &ProvidersConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let mut registry = ProviderRegistry::new();
        for (name, provider) in config {
            let invalid = |reason: String| LlmError::Config {
                provider: name.clone(),
                reason,
            };
            if name.is_empty() || name.contains('/') {
                return Err(invalid(
                    "provider names must be non-empty and contain no `/`".into(),
                ));
            }
            let api_key = match (&provider.api_key, &provider.api_key_env) {
                (Some(key), _) => Some(key.clone()),
                (None, Some(var)) => match env(var) {
                    Some(value) if !value.is_empty() => Some(SecretString::new(value)),
                    _ => return Err(invalid(format!("environment variable `{var}` is not set"))),
                },
                (None, None) => None,
            };
            let built: Arc<dyn ModelProvider> = match provider.kind {
                ProviderKind::Openai => {
                    let mut cfg = OpenAiConfig::new(
                        provider
                            .base_url
                            .as_deref()
                            .unwrap_or(DEFAULT_OPENAI_BASE_URL),
                    );
                    cfg.api_key = api_key;
                    Arc::new(OpenAiProvider::new(cfg)?)
                }
                ProviderKind::Anthropic => {
                    let mut cfg = AnthropicConfig::new(
                        provider
                            .base_url
                            .as_deref()
                            .unwrap_or(DEFAULT_ANTHROPIC_BASE_URL),
                    );
                    cfg.api_key = api_key;
                    Arc::new(AnthropicProvider::new(cfg)?)
                }
            };
            registry.insert(
                name.clone(),
                built,
                provider.models.clone(),
                provider.default_model.clone(),
            );
            registry.set_prices(name, provider.prices.clone());
        }
        Ok(registry)
    }

    /// Providers from the standard environment variables: `openai` when
    /// `OPENAI_API_KEY` is set (base URL from `OPENAI_BASE_URL`), `anthropic`
    /// when `ANTHROPIC_API_KEY` is set (base URL from `ANTHROPIC_BASE_URL`).
    pub fn from_env() -> Result<Self, LlmError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`ProviderRegistry::from_env`] with lookups through `env`.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, LlmError> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut config = ProvidersConfig::new();
        for (name, kind, key_var, url_var) in [
            (
                "openai",
                ProviderKind::Openai,
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
            ),
            (
                "anthropic",
                ProviderKind::Anthropic,
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
            ),
        ] {
            if let Some(key) = set(key_var) {
                let mut provider = ProviderConfig::new(kind);
                provider.api_key = Some(SecretString::new(key));
                provider.base_url = set(url_var);
                config.insert(name.to_owned(), provider);
            }
        }
        Self::from_config_with_env(&config, env)
    }

    /// Adds (or replaces) a provider under `name`, with the models it
    /// advertises and its default model (provider-local names).
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        provider: Arc<dyn ModelProvider>,
        models: Vec<String>,
        default_model: Option<String>,
    ) {
        self.providers.insert(
            name.into(),
            Entry {
                provider,
                models,
                default_model,
                prices: BTreeMap::new(),
            },
        );
    }

    /// Sets the price table (provider-local model names) of provider `name`;
    /// does nothing when no such provider exists.
    pub fn set_prices(&mut self, name: &str, prices: BTreeMap<String, ModelPrice>) {
        if let Some(entry) = self.providers.get_mut(name) {
            entry.prices = prices;
        }
    }

    /// The price of a `provider/model` id: the provider's configured
    /// `prices:` entry, else the default list price of the model name
    /// ([`crate::default_price`]); both match date and variant suffixes
    /// (`claude-sonnet-4-20250514` is priced as `claude-sonnet-4`). `None`
    /// for an unknown provider or a model neither knows.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        let (name, local) = model.split_once('/')?;
        let entry = self.providers.get(name)?;
        crate::prices::lookup_in(&entry.prices, local).or_else(|| crate::default_price(local))
    }

    /// The cost in dollars of `usage` on the `provider/model` id; `None`
    /// when the model has no price (see [`ProviderRegistry::price`]).
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|price| price.cost(usage))
    }

    /// Resolves `provider/model` to the provider and the provider-local model
    /// name to put in the request.
    pub fn resolve(&self, model: &str) -> Result<(Arc<dyn ModelProvider>, String), LlmError> {
        let unknown = |reason: String| LlmError::UnknownModel {
            model: model.to_owned(),
            reason,
        };
        let Some((name, local)) = model
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
        else {
            return Err(unknown(format!(
                "model ids look like `openai/gpt-5` (provider/model){}",
                self.configured_hint()
            )));
        };
        match self.providers.get(name) {
            Some(entry) => Ok((entry.provider.clone(), local.to_owned())),
            None => Err(unknown(format!(
                "no provider named `{name}`{}",
                self.configured_hint()
            ))),
        }
    }

    fn configured_hint(&self) -> String {
        if self.providers.is_empty() {
            "; no providers are configured".to_owned()
        } else {
            let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            format!("; configured: {}", names.join(", "))
        }
    }

    /// The provider registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ModelProvider>> {
        self.providers.get(name).map(|e| e.provider.clone())
    }

    /// Provider names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }

    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Advertised models as `provider/model` entries (defaults included),
    /// sorted by provider, in configured order within one.
    pub fn models(&self) -> Vec<ModelEntry> {
        let mut entries = Vec::new();
        for (name, entry) in &self.providers {
            let defaults = entry.default_model.iter();
            let mut seen = std::collections::HashSet::new();
            for model in entry.models.iter().chain(defaults) {
                if seen.insert(model) {
                    entries.push(ModelEntry {
                        id: format!("{name}/{model}"),
                        provider: name.clone(),
                    });
                }
            }
        }
        entries
    }

    /// The model to use when none is named: the first provider's configured
    /// default (providers in name order), else `openai/gpt-5` when a provider
    /// named `openai` exists, else `anthropic/claude-sonnet-4-5` when
    /// `anthropic` exists, else the first advertised model.
    pub fn default_model(&self) -> Option<String> {
        if let Some((name, model)) = self
            .providers
            .iter()
            .find_map(|(name, e)| e.default_model.as_ref().map(|m| (name, m)))
        {
            return Some(format!("{name}/{model}"));
        }
        if self.providers.contains_key("openai") {
            return Some(format!("openai/{OPENAI_DEFAULT_MODEL}"));
        }
        if self.providers.contains_key("anthropic") {
            return Some(format!("anthropic/{ANTHROPIC_DEFAULT_MODEL}"));
        }
        self.models().into_iter().next().map(|entry| entry.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn loads_yaml_and_rejects_unknown_fields() {
        let yaml = "
local:
  kind: openai
  base_url: http://127.0.0.1:8000/v1
  models: [Qwen/Qwen2.5-Coder]
claude:
  kind: anthropic
  api_key_env: MY_KEY
  default_model: claude-opus-4
";
        let config: ProvidersConfig = serde_norway::from_str(yaml).unwrap();
        assert_eq!(config["local"].kind, ProviderKind::Openai);
        assert_eq!(config["claude"].api_key_env.as_deref(), Some("MY_KEY"));

        let bad = "x:\n  kind: openai\n  api_base: http://nope\n";
        let err = serde_norway::from_str::<ProvidersConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_base"), "{err}");

        let registry =
            ProviderRegistry::from_config_with_env(&config, env(&[("MY_KEY", "k")])).unwrap();
        assert_eq!(registry.provider_names(), ["claude", "local"]);
        assert_eq!(
            registry.default_model().as_deref(),
            Some("claude/claude-opus-4")
        );
        let ids: Vec<String> = registry.models().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["claude/claude-opus-4", "local/Qwen/Qwen2.5-Coder"]);
    }

    #[test]
    fn prices_compute_cost() {
        let yaml = "
openai:
  kind: openai
  api_key: k
  prices:
    gpt-5: {input_per_mtok: 1.25, output_per_mtok: 10.0}
";
        let config: ProvidersConfig = serde_norway::from_str(yaml).unwrap();
        let registry = ProviderRegistry::from_config_with_env(&config, env(&[])).unwrap();
        let usage = Usage {
            prompt_tokens: 2_000_000,
            completion_tokens: 500_000,
            ..Usage::default()
        };
        let cost = registry.cost("openai/gpt-5", &usage).unwrap();
        assert!((cost - 7.5).abs() < 1e-9, "{cost}");
        // A dated name matches its configured entry.
        let dated = registry.cost("openai/gpt-5-2025-08-07", &usage).unwrap();
        assert!((dated - 7.5).abs() < 1e-9, "{dated}");
        // Unconfigured models fall back to the default list prices.
        let listed = registry.cost("openai/gpt-4o", &usage).unwrap();
        assert!((listed - (2.0 * 2.5 + 0.5 * 10.0)).abs() < 1e-9, "{listed}");
        assert_eq!(registry.cost("openai/my-finetune", &usage), None);
        assert_eq!(registry.cost("nope/gpt-5", &usage), None);
        let bad = "openai:\n  kind: openai\n  prices: {m: {input: 1}}\n";
        assert!(serde_norway::from_str::<ProvidersConfig>(bad).is_err());
    }

    #[test]
    fn a_missing_key_variable_is_an_error() {
        let mut config = ProvidersConfig::new();
        let mut provider = ProviderConfig::new(ProviderKind::Anthropic);
        provider.api_key_env = Some("NOT_SET".into());
        config.insert("anthropic".into(), provider);
        let err = ProviderRegistry::from_config_with_env(&config, env(&[])).unwrap_err();
        assert!(err.to_string().contains("`NOT_SET` is not set"), "{err}");
    }

    #[test]
    fn resolves_ids_and_explains_failures() {
        let registry = ProviderRegistry::from_env_with(env(&[
            ("OPENAI_API_KEY", "sk"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
        ]))
        .unwrap();
        let (_, model) = registry.resolve("openai/gpt-5").unwrap();
        assert_eq!(model, "gpt-5");
        let (_, model) = registry.resolve("anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(model, "claude-sonnet-4-5");

        let err = registry.resolve("gpt-5").err().unwrap();
        assert!(matches!(&err, LlmError::UnknownModel { model, .. } if model == "gpt-5"));
        assert!(
            err.to_string()
                .contains("model ids look like `openai/gpt-5`"),
            "{err}"
        );
        let err = registry.resolve("openai/").err().unwrap();
        assert!(err.to_string().contains("model ids look like"), "{err}");
        let err = registry.resolve("x/y").err().unwrap();
        assert!(
            err.to_string()
                .contains("no provider named `x`; configured: anthropic, openai"),
            "{err}"
        );
        assert_eq!(registry.default_model().as_deref(), Some("openai/gpt-5"));
    }

    #[test]
    fn model_names_may_contain_slashes() {
        let mut config = ProvidersConfig::new();
        let mut local = ProviderConfig::new(ProviderKind::Openai);
        local.base_url = Some("http://127.0.0.1:1/v1".into());
        config.insert("local".into(), local);
        let registry = ProviderRegistry::from_config_with_env(&config, env(&[])).unwrap();
        let (_, model) = registry.resolve("local/Qwen/Qwen2.5-Coder").unwrap();
        assert_eq!(model, "Qwen/Qwen2.5-Coder");
        assert_eq!(registry.default_model(), None);
    }

    #[test]
    fn defaults_follow_the_configured_providers() {
        let only_anthropic =
            ProviderRegistry::from_env_with(env(&[("ANTHROPIC_API_KEY", "k")])).unwrap();
        assert_eq!(
            only_anthropic.default_model().as_deref(),
            Some("anthropic/claude-sonnet-4-5")
        );
        let none = ProviderRegistry::from_env_with(env(&[])).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.default_model(), None);
        let err = none.resolve("openai/gpt-5").err().unwrap();
        assert!(
            err.to_string().contains("no providers are configured"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut provider = ProviderConfig::new(ProviderKind::Openai);
        provider.api_key = Some("sk-live-123".into());
        assert!(!format!("{provider:?}").contains("sk-live-123"));
        let registry =
            ProviderRegistry::from_env_with(env(&[("OPENAI_API_KEY", "sk-live-123")])).unwrap();
        assert!(!format!("{registry:?}").contains("sk-live-123"));
    }
}
