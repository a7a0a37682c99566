//! Store benchmark: run creation throughput on SQLite and PostgreSQL, and
//! `list_runs` with filters over 100,000 stored runs (target on SQLite: p50 ≤ 10 ms).
//!
//! `cargo bench -p hangar-store --bench store`. PostgreSQL figures need
//! `HANGAR_TEST_DATABASE_URL` (`eval "$(scripts/pg-test-env)"`); without it
//! they are reported as not measured. Sizes: `HANGAR_BENCH_RUNS` (default
//! 100000), `HANGAR_BENCH_CREATES` (default 2000).
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use hangar_protocol::{
    AgentConfig, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 8;
const LIST_SAMPLES: usize = 200;
const PAGE: i64 = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn new_run(team_id: i64) -> NewRun {
    NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "bench".into(),
        prompt: "do the thing".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig::default(),
        created_at: Timestamp::now().unix_millis(),
    }
}

/// Sequential and concurrent `create_run`; prints runs per second.
async fn creation(name: &str, store: Arc<dyn Store>, n: usize) {
    let team = store
        .create_team(&RunId::generate().0, "bench")
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..n {
        store.create_run(new_run(team.id)).await.unwrap();
    }
    let seq = started.elapsed();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / CONCURRENCY {
                store.create_run(new_run(team.id)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let conc = started.elapsed();
    let per_sec = |count: usize, d: Duration| count as f64 / d.as_secs_f64();
    println!(
        "{name:<10} create_run: {:>8.0} runs/s sequential ({n} runs), {:>8.0} runs/s with {CONCURRENCY} tasks",
        per_sec(n, seq),
        per_sec(n / CONCURRENCY * CONCURRENCY, conc)
    );
}

/// State of the i-th seeded run: mostly finished, a few live, as in a busy team.
fn seeded_state(i: usize) -> RunState {
    match i % 100 {
        0..=79 => RunState::Succeeded,
        80..=89 => RunState::Failed,
        90..=94 => RunState::Cancelled,
        95..=97 => RunState::InProgress,
        _ => RunState::Queued,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Times `list_runs` for a set of realistic queries; returns the worst p50.
async fn listing(name: &str, store: &dyn Store, team_id: i64, total: usize) -> Duration {
    let cases: Vec<(&str, RunQuery)> = vec![
        (
            "no filter",
            RunQuery {
                limit: PAGE,
                ..Default::default()
            },
        ),
        (
            "state=SUCCEEDED (80%)",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Succeeded],
                ..Default::default()
            },
        ),
        (
            "state=INPROGRESS (3%)",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::InProgress],
                ..Default::default()
            },
        ),
        (
            "state in QUEUED,INPROGRESS",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Queued, RunState::InProgress],
                ..Default::default()
            },
        ),
        (
            "state in SUCCEEDED,FAILED (90%)",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Succeeded, RunState::Failed],
                ..Default::default()
            },
        ),
        (
            "state=ERROR (none)",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Error],
                ..Default::default()
            },
        ),
        (
            "state=ERROR (none), by created",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Error],
                sort: RunSort::CreatedAt,
                ..Default::default()
            },
        ),
        (
            "state=FAILED+source, by created, asc",
            RunQuery {
                limit: PAGE,
                states: vec![RunState::Failed],
                source: Some(RunSourceType::Api),
                sort: RunSort::CreatedAt,
                ascending: true,
                ..Default::default()
            },
        ),
    ];
    let mut worst = Duration::ZERO;
    for (label, mut query) in cases {
        // Page 1, then follow the cursor a few pages deep and back to page 1,
        // so the figure includes keyset continuation.
        let first = query.clone();
        let mut samples = Vec::with_capacity(LIST_SAMPLES);
        let mut rows = 0;
        for i in 0..LIST_SAMPLES {
            if i % 5 == 0 {
                query = first.clone();
            }
            let started = Instant::now();
            let page = store.list_runs(team_id, &query).await.unwrap();
            samples.push(started.elapsed());
            rows = rows.max(page.runs.len());
            query.after = page.next;
        }
        samples.sort();
        let p50 = percentile(&samples, 0.5);
        worst = worst.max(p50);
        println!(
            "{name:<10} list_runs over {total} runs, {label:<36} p50 {:>7.2} ms  p95 {:>7.2} ms  ({rows} rows/page)",
            p50.as_secs_f64() * 1e3,
            percentile(&samples, 0.95).as_secs_f64() * 1e3,
        );
    }
    worst
}

async fn seed_sqlite(path: &std::path::Path, team_id: i64, total: usize) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let config = serde_json::to_string(&AgentConfig::default()).unwrap();
    let base = Timestamp::now().unix_millis() - total as i64 * 1000;
    let mut tx = conn.begin().await.unwrap();
    for i in 0..total {
        let at = base + i as i64 * 1000;
        sqlx::query(
            "INSERT INTO runs (id, team_id, title, prompt, state, source, execution_location, \
             config, created_at, updated_at) VALUES (?, ?, 'bench', 'p', ?, 'API', 'REMOTE', ?, ?, ?)",
        )
        .bind(RunId::generate().0)
        .bind(team_id)
        .bind(seeded_state(i).as_str())
        .bind(&config)
        .bind(at)
        .bind(at + 500)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    // No ANALYZE: `hangar server` does not run it, so neither does the benchmark.
    tx.commit().await.unwrap();
}

async fn seed_postgres(store: &PostgresStore, team_id: i64, total: usize) {
    let config = serde_json::to_string(&AgentConfig::default()).unwrap();
    let base = Timestamp::now().unix_millis() - total as i64 * 1000;
    sqlx::query(
        "INSERT INTO runs (id, team_id, title, prompt, state, source, execution_location, \
         config, created_at, updated_at) \
         SELECT 'r' || lpad(i::text, 12, '0'), $1, 'bench', 'p', \
           CASE WHEN i % 100 < 80 THEN 'SUCCEEDED' WHEN i % 100 < 90 THEN 'FAILED' \
                WHEN i % 100 < 95 THEN 'CANCELLED' WHEN i % 100 < 98 THEN 'INPROGRESS' \
                ELSE 'QUEUED' END, \
           'API', 'REMOTE', $2, $3 + i * 1000, $3 + i * 1000 + 500 \
         FROM generate_series(0, $4 - 1) AS i",
    )
    .bind(team_id)
    .bind(config)
    .bind(base)
    .bind(total as i64)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE runs")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let total = env_usize("HANGAR_BENCH_RUNS", 100_000);
    let creates = env_usize("HANGAR_BENCH_CREATES", 2_000);
    let dir = tempfile::tempdir().unwrap();

    // SQLite, on disk (WAL, synchronous=FULL), as `hangar server` runs it.
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("create.db"))
            .await
            .unwrap(),
    );
    creation("sqlite", sqlite.clone(), creates).await;
    sqlite.close().await;

    let path = dir.path().join("list.db");
    let sqlite = SqliteStore::open(&path).await.unwrap();
    let team = sqlite.create_team("bench", "bench").await.unwrap();
    let other = sqlite.create_team("other", "other").await.unwrap();
    sqlite.close().await;
    let started = Instant::now();
    seed_sqlite(&path, team.id, total).await;
    seed_sqlite(&path, other.id, total / 10).await;
    println!(
        "sqlite     seeded {total} runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let sqlite = SqliteStore::open(&path).await.unwrap();
    let worst = listing("sqlite", &sqlite, team.id, total).await;
    println!(
        "sqlite     list_runs worst p50 {:.2} ms (target ≤ 10 ms): {}",
        worst.as_secs_f64() * 1e3,
        if worst <= Duration::from_millis(10) {
            "OK"
        } else {
            "MISSED"
        }
    );
    sqlite.close().await;

    match std::env::var("HANGAR_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("hangar_bench_{}", RunId::generate().0.replace('-', "_"));
            let config = PostgresConfig {
                schema: Some(schema.clone()),
                ..PostgresConfig::new(url)
            };
            let pg = Arc::new(PostgresStore::connect_with(&config).await.unwrap());
            creation("postgres", pg.clone(), creates).await;
            let team = pg.create_team("bench", "bench").await.unwrap();
            seed_postgres(&pg, team.id, total).await;
            listing("postgres", &*pg, team.id, total).await;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(pg.pool())
                .await
                .unwrap();
            pg.close().await;
        }
        Err(_) => println!(
            "postgres   not measured: set HANGAR_TEST_DATABASE_URL (eval \"$(scripts/pg-test-env)\")"
        ),
    }
}
