//! Provider resolution end to end: config → registry → fake server.

use super::common::{request, user};
use hangar_llm::llm::MessageContent;
use hangar_llm::{
    LlmError, ProviderConfig, ProviderKind, ProviderRegistry, ProvidersConfig, collect,
};
use hangar_testkit::fake_llm::{FakeLlm, Turn};

#[tokio::test]
async fn resolves_to_providers_that_reach_their_servers() {
    let openai_like = FakeLlm::start(vec![Turn::text("from vllm")]).await;
    let anthropic = FakeLlm::start(vec![Turn::text("from claude")]).await;
    let yaml = format!(
        "local:\n  kind: openai\n  base_url: {}\n  models: [Qwen/Qwen2.5-Coder]\n\
         claude:\n  kind: anthropic\n  base_url: {}\n  api_key: sk-ant\n",
        openai_like.base_url(),
        anthropic.anthropic_base_url()
    );
    let config: ProvidersConfig = serde_norway::from_str(&yaml).unwrap();
    let registry = ProviderRegistry::from_config(&config).unwrap();

    let (provider, model) = registry.resolve("local/Qwen/Qwen2.5-Coder").unwrap();
    assert_eq!(model, "Qwen/Qwen2.5-Coder");
    let response = collect(
        provider
            .chat_stream(request(&model, vec![user("hi")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("from vllm".into()))
    );
    assert_eq!(openai_like.requests()[0]["model"], "Qwen/Qwen2.5-Coder");

    let (provider, model) = registry.resolve("claude/claude-opus-4").unwrap();
    let response = collect(
        provider
            .chat_stream(request(&model, vec![user("hi")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("from claude".into()))
    );
    assert_eq!(anthropic.received()[0].headers["x-api-key"], "sk-ant");
    assert_eq!(
        registry.default_model().as_deref(),
        Some("local/Qwen/Qwen2.5-Coder")
    );
}

#[test]
fn unknown_models_say_why() {
    let mut config = ProvidersConfig::new();
    config.insert("openai".into(), ProviderConfig::new(ProviderKind::Openai));
    config.insert("local".into(), ProviderConfig::new(ProviderKind::Openai));
    let registry = ProviderRegistry::from_config(&config).unwrap();

    let err = registry.resolve("gpt-5").err().unwrap();
    assert!(
        err.to_string()
            .contains("model ids look like `openai/gpt-5`"),
        "{err}"
    );
    let err = registry
        .resolve("anthropic/claude-sonnet-4-5")
        .err()
        .unwrap();
    match &err {
        LlmError::UnknownModel { model, reason } => {
            assert_eq!(model, "anthropic/claude-sonnet-4-5");
            assert_eq!(
                reason,
                "no provider named `anthropic`; configured: local, openai"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(!err.is_retryable());
}
