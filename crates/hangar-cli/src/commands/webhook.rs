//! `hangar webhook create|list|delete|deliveries|redeliver|test`: outbound
//! webhooks over `/api/v1/webhooks`. The signing secret is printed once,
//! when the webhook is created.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::Result;
use hangar_client::encode;
use hangar_protocol::Timestamp;
use hangar_protocol::webhook::{
    CreateWebhookRequest, ListWebhookDeliveriesResponse, ListWebhooksResponse, WebhookCreated,
    WebhookDeliveryItem,
};
use std::process::ExitCode;

/// `hangar webhook …`.
#[derive(Debug, clap::Args)]
pub struct WebhookCommand {
    #[command(subcommand)]
    sub: WebhookSub,
}

#[derive(Debug, clap::Subcommand)]
enum WebhookSub {
    /// Subscribe a URL to run lifecycle events; prints the signing secret once.
    Create {
        /// Where deliveries are posted.
        #[arg(long)]
        url: String,
        /// Lifecycle event type to send (`run_succeeded`, …; repeatable; all when none).
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
    },
    /// List the team's webhooks.
    List,
    /// Delete a webhook (no delivery is sent after this).
    Delete {
        /// Webhook id.
        id: String,
    },
    /// Show a webhook's delivery log, newest first.
    Deliveries {
        /// Webhook id.
        id: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a delivery again.
    Redeliver {
        /// Webhook id.
        id: String,
        /// Delivery id (from `hangar webhook deliveries`).
        delivery: String,
    },
    /// Send a test delivery (`ping`), signed, through the delivery log.
    Test {
        /// Webhook id.
        id: String,
    },
}

fn path(id: &str) -> String {
    format!("api/v1/webhooks/{}", encode(id))
}

fn print_delivery(d: &WebhookDeliveryItem) {
    println!(
        "{:<36}  {:<16}  {:<9}  {:>8}  {:>4}  {}",
        d.id,
        d.event_type,
        d.state,
        d.attempts,
        d.response_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.error.as_deref().unwrap_or(&d.updated_at.to_rfc3339())
    );
}

/// Sends `delivery` of webhook `id` again, or a test (`ping`) when `None`,
/// and prints the queued delivery.
async fn queue(
    client: &hangar_client::Client,
    format: OutputFormat,
    id: &str,
    delivery: Option<&str>,
) -> Result<()> {
    let url = match delivery {
        Some(d) => format!("{}/deliveries/{}/redeliver", path(id), encode(d)),
        None => format!("{}/test", path(id)),
    };
    let d: WebhookDeliveryItem = client.post_json(&url, &serde_json::json!({})).await?;
    match format {
        OutputFormat::Pretty if delivery.is_some() => println!(
            "Delivery {} queued again (due {}).",
            d.id,
            d.next_attempt_at
                .as_ref()
                .map_or_else(|| "now".to_owned(), Timestamp::to_rfc3339)
        ),
        OutputFormat::Pretty => println!(
            "Test delivery {} (ping) queued; see it with: hangar webhook deliveries {id}",
            d.id
        ),
        OutputFormat::Text => println!("{}", d.id),
        f => print_json(&d, f),
    }
    Ok(())
}

/// Dispatches `hangar webhook …`.
pub async fn run(cmd: WebhookCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    let format = global.output;
    match cmd.sub {
        WebhookSub::Create { url, events } => {
            let req = CreateWebhookRequest {
                url,
                event_types: events,
            };
            let created: WebhookCreated = client.post_json("api/v1/webhooks", &req).await?;
            match format {
                OutputFormat::Pretty => {
                    println!(
                        "Created webhook {} → {}",
                        created.webhook.id, created.webhook.url
                    );
                    println!("Signing secret (shown once; verify X-Hangar-Signature with it):");
                    println!("{}", created.secret.expose());
                }
                OutputFormat::Text => {
                    println!("{}\t{}", created.webhook.id, created.secret.expose())
                }
                f => {
                    let mut v = serde_json::to_value(&created.webhook)?;
                    v["secret"] = created.secret.expose().into();
                    print_json(&v, f);
                }
            }
        }
        WebhookSub::List => {
            let list: ListWebhooksResponse = client.get_json("api/v1/webhooks").await?;
            match format {
                OutputFormat::Pretty => {
                    if list.webhooks.is_empty() {
                        println!(
                            "No webhooks yet. Create one with: hangar webhook create --url URL"
                        );
                    }
                    for w in &list.webhooks {
                        let types = if w.event_types.is_empty() {
                            "all events".to_owned()
                        } else {
                            w.event_types.join(",")
                        };
                        println!("{:<36}  {}  ({types})", w.id, w.url);
                    }
                }
                OutputFormat::Text => list.webhooks.iter().for_each(|w| println!("{}", w.id)),
                f => print_json(&list, f),
            }
        }
        WebhookSub::Delete { id } => {
            let v: serde_json::Value = client.send_delete(&path(&id)).await?;
            match format {
                OutputFormat::Pretty => println!("Deleted webhook {id}."),
                OutputFormat::Text => println!("{id}"),
                f => print_json(&v, f),
            }
        }
        WebhookSub::Deliveries { id, limit } => {
            let log: ListWebhookDeliveriesResponse = client
                .get_json(&format!("{}/deliveries?limit={limit}", path(&id)))
                .await?;
            match format {
                OutputFormat::Pretty => {
                    println!(
                        "{:<36}  {:<16}  {:<9}  {:>8}  {:>4}  LAST",
                        "DELIVERY", "EVENT", "STATE", "ATTEMPTS", "CODE"
                    );
                    log.deliveries.iter().for_each(print_delivery);
                }
                OutputFormat::Text => log.deliveries.iter().for_each(|d| println!("{}", d.id)),
                f => print_json(&log, f),
            }
        }
        WebhookSub::Redeliver { id, delivery } => {
            queue(&client, format, &id, Some(&delivery)).await?;
        }
        WebhookSub::Test { id } => queue(&client, format, &id, None).await?,
    }
    Ok(ExitCode::SUCCESS)
}
