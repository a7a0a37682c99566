//! C3: nothing secret in a database dump. API keys, run tokens and public
//! share links are stored as SHA-256 hashes only (as `hangar-server`'s
//! `auth::hash_secret` computes them); a dump of every table must not contain
//! any of them in clear.

use crate::suite::postgres::TestSchema;
use hangar_protocol::session::{EventBody, SessionEvent};
use hangar_protocol::{
    API_KEY_PREFIX, AgentConfig, ExecutionId, RUN_TOKEN_PREFIX, RunExecutionLocation, RunId,
    RunSourceType, Timestamp,
};
use hangar_store::*;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};

struct Secrets {
    api_key: String,
    run_token: String,
    /// A public share link's token.
    share_token: String,
    /// Hex of the stored hashes: must be in the dump (proves it covers those tables).
    hashes_hex: Vec<String>,
}

fn random_secret(prefix: &str) -> String {
    // Two UUIDs' worth of random hex, as long as a real 256-bit secret.
    let a = uuid_hex();
    let b = uuid_hex();
    format!("{prefix}{a}{b}")
}

fn uuid_hex() -> String {
    ExecutionId::generate().0.replace('-', "")
}

/// Stores a team, a user, an API key, a run with an execution and events,
/// the way the server does; returns the secrets it used.
async fn populate(store: &dyn Store) -> Secrets {
    let team = store.create_team(&RunId::generate().0, "c3").await.unwrap();
    let user = store
        .create_user(NewUser {
            uid: RunId::generate().0,
            team_id: team.id,
            email: Some("dev@example.com".into()),
            display_name: "Dev".into(),
            role: "admin".into(),
        })
        .await
        .unwrap();
    let api_key = random_secret(API_KEY_PREFIX);
    let key_hash = Sha256::digest(api_key.as_bytes()).to_vec();
    store
        .create_api_key(NewApiKey {
            id: RunId::generate().0,
            team_id: team.id,
            user_id: Some(user.id),
            name: "ci".into(),
            prefix: api_key.chars().take(API_KEY_PREFIX.len() + 8).collect(),
            hash: key_hash.clone(),
            created_at: Timestamp::now().unix_millis(),
            expires_at: None,
        })
        .await
        .unwrap();
    let run = store
        .create_run(NewRun {
            id: RunId::generate(),
            team_id: team.id,
            creator_user_id: Some(user.id),
            title: "t".into(),
            prompt: "p".into(),
            source: RunSourceType::Api,
            execution_location: RunExecutionLocation::Remote,
            config: AgentConfig::default(),
            created_at: Timestamp::now().unix_millis(),
        })
        .await
        .unwrap();
    let run_token = random_secret(RUN_TOKEN_PREFIX);
    let token_hash = Sha256::digest(run_token.as_bytes()).to_vec();
    let exec = ExecutionId::generate();
    store
        .assign(NewExecution {
            id: exec.clone(),
            run_id: run.id.clone(),
            worker_id: "w".into(),
            token_hash: token_hash.clone(),
            created_at: Timestamp::now().unix_millis(),
            lease_holder: None,
            lease_expires_at: None,
            issuer_key_id: None,
        })
        .await
        .unwrap();
    store
        .append_events(
            &run.id,
            &exec,
            &[SessionEvent {
                seq: 1,
                at: Timestamp::now(),
                body: EventBody::AssistantMessage { text: "hi".into() },
            }],
        )
        .await
        .unwrap();
    let share_token = random_secret(hangar_protocol::share::SHARE_TOKEN_PREFIX);
    let share_hash = Sha256::digest(share_token.as_bytes()).to_vec();
    store
        .create_share(NewShare {
            id: RunId::generate().0,
            team_id: team.id,
            run_id: run.id.clone(),
            grantee: Grantee::Public {
                token_hash: share_hash.clone(),
            },
            role: "view".into(),
            created_by: Some(user.id),
            created_at: Timestamp::now().unix_millis(),
        })
        .await
        .unwrap();
    Secrets {
        api_key,
        run_token,
        share_token,
        hashes_hex: vec![
            hex::encode(key_hash),
            hex::encode(token_hash),
            hex::encode(share_hash),
        ],
    }
}

fn assert_no_clear_secrets(dump: &str, secrets: &Secrets) {
    let dump = dump.to_lowercase();
    for secret in [&secrets.api_key, &secrets.run_token, &secrets.share_token] {
        let random_part = &secret[3..];
        assert!(
            !dump.contains(&secret.to_lowercase()) && !dump.contains(random_part),
            "a secret appears in clear in the dump"
        );
    }
    for hash in &secrets.hashes_hex {
        assert!(
            dump.contains(hash),
            "the dump does not cover the hashed column ({hash}); it proves nothing"
        );
    }
}

#[tokio::test]
async fn c3_sqlite_dump_holds_no_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let secrets = populate(&store).await;
    Store::close(&store).await;

    // Read every table, every column: text as is, blobs as hex and as text.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(tables.iter().any(|t| t == "api_keys") && tables.iter().any(|t| t == "executions"));
    let mut dump = String::new();
    for table in &tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    dump.push_str(&text);
                } else if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                    dump.push_str(&hex::encode(&bytes));
                    dump.push(' ');
                    dump.push_str(&String::from_utf8_lossy(&bytes));
                }
                dump.push('\t');
            }
            dump.push('\n');
        }
    }
    assert_no_clear_secrets(&dump, &secrets);
}

#[tokio::test]
async fn c3_postgres_dump_holds_no_secret_in_clear() {
    let db = TestSchema::new();
    let store = db.store().await;
    let secrets = populate(&store).await;

    let dump = match pg_dump(&db) {
        Some(dump) => dump,
        None => select_everything(&store).await,
    };
    assert!(dump.contains("api_keys") || dump.contains("\\x"));
    assert_no_clear_secrets(&dump, &secrets);
    db.cleanup(&store).await;
}

/// `pg_dump` of the test schema, when the tool is installed and matches the server.
fn pg_dump(db: &TestSchema) -> Option<String> {
    let out = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&db.url)
        .arg("--schema")
        .arg(&db.schema)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "pg_dump failed ({}); selecting every table instead",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every row of every table of the schema, as PostgreSQL renders a row to text
/// (bytea as `\x` hex).
async fn select_everything(store: &PostgresStore) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(store.schema())
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(store.pool())
        .await
        .unwrap();
        dump.push_str(&format!("-- {table}\n"));
        for row in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    dump
}
