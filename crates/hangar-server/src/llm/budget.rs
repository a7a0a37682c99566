//! Gateway budgets: `llm_gateway:` in the server config, the limits a team
//! gets from it, request-rate buckets per run and per caller, and the check
//! that says a run has used its budget.
//!
//! Token and cost budgets are read from the store (the run's metered usage),
//! so every replica enforces the same totals. Rate buckets live in each
//! replica's memory: with several replicas behind a load balancer a run or
//! key gets up to `requests_per_second` on each.

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use hangar_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

/// `llm_gateway:` in the server configuration. Every limit is off at 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Tokens (prompt + completion) one run may use through the gateway;
    /// a run that reaches it is ended `FAILED` (`budget_exceeded`).
    pub max_tokens_per_run: u64,
    /// Dollars one run may spend (priced by the provider's `prices:` or the
    /// built-in list prices); a run that reaches it is ended `FAILED`.
    pub max_cost_usd_per_run: f64,
    /// Sustained gateway calls per second per run and per API key (or
    /// dashboard session): a token bucket; over it the answer is 429 with
    /// `Retry-After`.
    pub requests_per_second: u32,
    /// Calls a run or key may make at once before the sustained rate
    /// applies (0: the same as `requests_per_second`).
    pub burst: u32,
    /// Overrides for some teams, by team name or uid; a field left out
    /// keeps the value above.
    pub teams: BTreeMap<String, TeamLimits>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_tokens_per_run: 0,
            max_cost_usd_per_run: 0.0,
            requests_per_second: 0,
            burst: 0,
            teams: BTreeMap::new(),
        }
    }
}

/// One team's overrides of [`GatewayConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamLimits {
    /// Overrides `max_tokens_per_run` (0: no limit for this team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_run: Option<u64>,
    /// Overrides `max_cost_usd_per_run` (0: no limit for this team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd_per_run: Option<f64>,
    /// Overrides `requests_per_second` (0: no limit for this team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Overrides `burst`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl GatewayConfig {
    /// Checks that costs are finite and not negative.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, cost: f64| {
            if cost.is_finite() && cost >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a number of dollars of at least 0 (0 = no limit)"
                ))
            }
        };
        check(
            "llm_gateway.max_cost_usd_per_run",
            self.max_cost_usd_per_run,
        )?;
        for (team, limits) in &self.teams {
            if let Some(cost) = limits.max_cost_usd_per_run {
                check(
                    &format!("llm_gateway.teams.{team}.max_cost_usd_per_run"),
                    cost,
                )?;
            }
        }
        Ok(())
    }

    fn limits(&self, team: Option<&TeamLimits>) -> Limits {
        let team = team.cloned().unwrap_or_default();
        Limits {
            max_tokens_per_run: team.max_tokens_per_run.unwrap_or(self.max_tokens_per_run),
            max_cost_usd_per_run: team
                .max_cost_usd_per_run
                .unwrap_or(self.max_cost_usd_per_run),
            requests_per_second: team.requests_per_second.unwrap_or(self.requests_per_second),
            burst: team.burst.unwrap_or(self.burst),
        }
    }
}

/// The limits that apply to one team.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// 0: none.
    pub max_tokens_per_run: u64,
    /// 0: none.
    pub max_cost_usd_per_run: f64,
    /// 0: none.
    pub requests_per_second: u32,
    /// 0: `requests_per_second`.
    pub burst: u32,
}

impl Limits {
    /// Why a run that used `tokens` and `cost_usd` may not go on, if it may not.
    pub fn exceeded(&self, tokens: i64, cost_usd: f64) -> Option<String> {
        let max_tokens = i64::try_from(self.max_tokens_per_run).unwrap_or(i64::MAX);
        if max_tokens > 0 && tokens >= max_tokens {
            return Some(format!(
                "stopped: the run used {} tokens, {} the limit max_tokens_per_run = {}",
                thousands(tokens),
                if tokens > max_tokens {
                    "over"
                } else {
                    "all of"
                },
                thousands(max_tokens)
            ));
        }
        let max_cost = self.max_cost_usd_per_run;
        if max_cost > 0.0 && cost_usd >= max_cost {
            return Some(format!(
                "stopped: the run cost ${cost_usd:.4}, {} the limit max_cost_usd_per_run = ${max_cost}",
                if cost_usd > max_cost {
                    "over"
                } else {
                    "all of"
                },
            ));
        }
        None
    }

    fn quota(&self) -> Option<(u32, u32)> {
        let rate = self.requests_per_second;
        (rate > 0).then_some((rate, if self.burst == 0 { rate } else { self.burst }))
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rate buckets keyed by caller (`run:…`, `key:…`, `user:…`).
type Buckets = DefaultKeyedRateLimiter<String>;

/// How long a team's resolved limits are reused (team names rarely change).
const TEAM_LIMITS_TTL: Duration = Duration::from_secs(60);
/// Checks between sweeps of idle rate buckets.
const SWEEP_EVERY: u64 = 10_000;

/// The gateway's budgets and rate buckets, shared by every request, and the
/// tasks that meter streams their clients dropped.
pub struct GatewayBudgets {
    config: GatewayConfig,
    /// One keyed bucket set per distinct `(rate, burst)` (teams may differ).
    buckets: Mutex<HashMap<(u32, u32), Arc<Buckets>>>,
    team_limits: Mutex<HashMap<i64, (Limits, Instant)>>,
    checks: AtomicU64,
    /// Usage recordings started when a response was dropped mid-way (a
    /// `Drop` cannot await); the server waits for them before it closes
    /// the store.
    pub tasks: TaskTracker,
}

impl GatewayBudgets {
    /// Budgets for `config`.
    pub fn new(config: GatewayConfig) -> Self {
        GatewayBudgets {
            config,
            buckets: Mutex::new(HashMap::new()),
            team_limits: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            tasks: TaskTracker::new(),
        }
    }

    /// The limits of team `team_id`: the config's, with that team's
    /// overrides (matched by name or uid) when there are any.
    pub async fn limits(&self, store: &dyn Store, team_id: i64) -> Limits {
        if self.config.teams.is_empty() {
            return self.config.limits(None);
        }
        {
            let cache = self.team_limits.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((limits, at)) = cache.get(&team_id)
                && at.elapsed() < TEAM_LIMITS_TTL
            {
                return *limits;
            }
        }
        let limits = match store.team(team_id).await {
            Ok(team) => self.config.limits(
                self.config
                    .teams
                    .get(&team.name)
                    .or_else(|| self.config.teams.get(&team.uid)),
            ),
            Err(e) => {
                // Not cached: the next call looks again.
                tracing::warn!(error = %e, team_id, "cannot read the team for its gateway limits; using the defaults");
                return self.config.limits(None);
            }
        };
        self.team_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(team_id, (limits, Instant::now()));
        limits
    }

    /// Takes one call from the bucket of `caller` (`run:…`, `key:…`,
    /// `user:…`) under `limits`; `Err(wait)` when it is empty.
    pub fn check_rate(&self, limits: &Limits, caller: &str) -> Result<(), Duration> {
        let Some((rate, burst)) = limits.quota() else {
            return Ok(());
        };
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            buckets
                .entry((rate, burst))
                .or_insert_with(|| {
                    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                    let burst = NonZeroU32::new(burst).unwrap_or(rate);
                    Arc::new(Buckets::keyed(Quota::per_second(rate).allow_burst(burst)))
                })
                .clone()
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&caller.to_owned())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_say_why_a_run_must_stop() {
        let limits = Limits {
            max_tokens_per_run: 100_000,
            max_cost_usd_per_run: 0.5,
            requests_per_second: 0,
            burst: 0,
        };
        assert_eq!(limits.exceeded(99_999, 0.1), None);
        assert_eq!(
            limits.exceeded(120_345, 0.1).as_deref(),
            Some(
                "stopped: the run used 120,345 tokens, over the limit max_tokens_per_run = 100,000"
            )
        );
        assert!(
            limits
                .exceeded(10, 0.75)
                .unwrap()
                .contains("over the limit max_cost_usd_per_run = $0.5"),
        );
        let none = Limits {
            max_tokens_per_run: 0,
            max_cost_usd_per_run: 0.0,
            ..limits
        };
        assert_eq!(none.exceeded(i64::MAX, 1e9), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn team_overrides_fall_back_field_by_field() {
        let config: GatewayConfig = serde_norway::from_str(
            "max_tokens_per_run: 1000\nrequests_per_second: 5\nteams:\n  big: {max_tokens_per_run: 0, burst: 9}\n",
        )
        .unwrap();
        let big = config.limits(config.teams.get("big"));
        assert_eq!(big.max_tokens_per_run, 0);
        assert_eq!(big.requests_per_second, 5);
        assert_eq!(big.quota(), Some((5, 9)));
        assert_eq!(config.limits(None).quota(), Some((5, 5)));
        assert!(serde_norway::from_str::<GatewayConfig>("max_tokens: 3\n").is_err());
        let bad = GatewayConfig {
            max_cost_usd_per_run: -1.0,
            ..GatewayConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn rate_buckets_are_per_caller() {
        let budgets = GatewayBudgets::new(GatewayConfig::default());
        let limits = Limits {
            max_tokens_per_run: 0,
            max_cost_usd_per_run: 0.0,
            requests_per_second: 1,
            burst: 2,
        };
        assert!(budgets.check_rate(&limits, "run:a").is_ok());
        assert!(budgets.check_rate(&limits, "run:a").is_ok());
        let wait = budgets.check_rate(&limits, "run:a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(budgets.check_rate(&limits, "key:b").is_ok());
        let off = Limits {
            requests_per_second: 0,
            ..limits
        };
        for _ in 0..100 {
            assert!(budgets.check_rate(&off, "run:a").is_ok());
        }
    }
}
