//! The OTLP exporters' HTTP client: our own reqwest on the process's tokio
//! runtime.
//!
//! OpenTelemetry's periodic reader and batch span processor export from
//! their own threads and block on the export future. The request itself is
//! spawned onto the runtime the exporter was built on, and the exporter's
//! thread waits for its join handle, so no second HTTP stack is built.

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use std::time::Duration;

/// Each export gets this long; OTLP's default timeout.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?;
        Ok(RuntimeClient { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let mut req = client.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let resp = req.body(body).send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
