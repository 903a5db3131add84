//! The health of one integration: the facts the supervisor saw, and the state they add
//! up to. [`assess`] is a pure function of the facts and the time, so every rule is
//! tested without a daemon.

use std::collections::VecDeque;
use std::time::Duration;

use plugin_protocol::ErrorClass;
use serde::Serialize;

use crate::config::HealthConfig;

/// The state of an integration, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    /// Not started yet, or not yet heard from since it started.
    Starting,
    /// Off on purpose by a flag.
    Paused,
    /// Transient errors, late data, a breaker half-open.
    Degraded,
    /// Errors persisting past the threshold, a breaker open, a crash loop.
    Failing,
    /// An authentication, permission or configuration error: a person must act.
    ActionRequired,
    /// Disabled by an operator, or by the daemon after repeated refusals.
    Disabled,
}

impl HealthState {
    pub const ALL: [Self; 7] = [
        Self::Healthy,
        Self::Starting,
        Self::Paused,
        Self::Degraded,
        Self::Failing,
        Self::ActionRequired,
        Self::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Starting => "starting",
            Self::Paused => "paused",
            Self::Degraded => "degraded",
            Self::Failing => "failing",
            Self::ActionRequired => "action_required",
            Self::Disabled => "disabled",
        }
    }

    /// How bad it is, for "worst first" (disabled by an operator sorts below trouble).
    pub fn badness(self) -> u8 {
        match self {
            Self::ActionRequired => 6,
            Self::Failing => 5,
            Self::Degraded => 4,
            Self::Disabled => 3,
            Self::Starting => 2,
            Self::Paused => 1,
            Self::Healthy => 0,
        }
    }
}

/// Whether data arrives as often as the integration polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Within two poll intervals.
    OnTime,
    /// Past two intervals.
    Late,
    /// Past five intervals.
    Stale,
    /// It does not collect, or has not succeeded yet.
    Unknown,
}

/// What the process manager says of the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessPhase {
    Starting,
    Running,
    /// Missed heartbeats.
    Degraded,
    /// Waiting to restart after a crash or hang.
    Restarting,
    CrashLoop,
    /// Cannot start until an operator acts (trust, reinstall).
    Refused,
    Stopped,
}

/// The last error an integration met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub class: ErrorClass,
    pub message: String,
    /// Where: `collect`, `check`, `process`, `webhook`.
    pub source: &'static str,
    pub at_ms: u64,
}

/// Who or what disabled an integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disabled {
    /// `operator`, `credential:<name>` or `health`.
    pub by: String,
    pub reason: String,
}

/// One dependency's breaker, as the plugin last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breaker {
    pub name: String,
    /// `closed`, `open`, `half-open`.
    pub state: String,
    pub detail: String,
    /// Since when it has been open (ms), while it is.
    pub open_since_ms: Option<u64>,
}

/// Timestamps of things that happened, kept for a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occurrences {
    /// (ms, count), oldest first.
    seen: VecDeque<(u64, u64)>,
}

impl Occurrences {
    pub fn add(&mut self, at_ms: u64, count: u64, keep: Duration) {
        if count == 0 {
            return;
        }
        match self.seen.back_mut() {
            // Within the same second: one entry, so a busy webhook path stays small.
            Some((last, n)) if at_ms.saturating_sub(*last) < 1_000 => *n += count,
            _ => self.seen.push_back((at_ms, count)),
        }
        self.forget_before(at_ms.saturating_sub(millis(keep)));
    }

    fn forget_before(&mut self, cutoff: u64) {
        while self.seen.front().is_some_and(|(at, _)| *at < cutoff) {
            self.seen.pop_front();
        }
    }

    /// How many happened within `window` before `now_ms`.
    pub fn within(&self, now_ms: u64, window: Duration) -> u64 {
        let cutoff = now_ms.saturating_sub(millis(window));
        self.seen
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= cutoff)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Counts per minute over the last hour, for a sparkline: a ring of 60 minutes that
/// stays 60 numbers however busy the integration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerMinute {
    /// The minute (ms since the epoch / 60,000) that `counts[newest]` holds.
    newest_minute: u64,
    newest: usize,
    counts: [u64; MINUTES_KEPT],
}

/// The minutes a [`PerMinute`] keeps.
pub const MINUTES_KEPT: usize = 60;

impl Default for PerMinute {
    fn default() -> Self {
        Self {
            newest_minute: 0,
            newest: 0,
            counts: [0; MINUTES_KEPT],
        }
    }
}

impl PerMinute {
    pub fn add(&mut self, at_ms: u64, count: u64) {
        let minute = at_ms / 60_000;
        if minute < self.newest_minute {
            // Older than the ring's newest minute (a clock step back): counted in the
            // minute it fits, if it is still kept.
            let back = self.newest_minute - minute;
            if let Ok(back) = usize::try_from(back)
                && back < MINUTES_KEPT
            {
                let slot = (self.newest + MINUTES_KEPT - back) % MINUTES_KEPT;
                self.counts[slot] = self.counts[slot].saturating_add(count);
            }
            return;
        }
        self.advance_to(minute);
        self.counts[self.newest] = self.counts[self.newest].saturating_add(count);
    }

    fn advance_to(&mut self, minute: u64) {
        let ahead = minute - self.newest_minute.min(minute);
        if ahead == 0 {
            return;
        }
        if ahead >= MINUTES_KEPT as u64 {
            self.counts = [0; MINUTES_KEPT];
        } else {
            for _ in 0..ahead {
                self.newest = (self.newest + 1) % MINUTES_KEPT;
                self.counts[self.newest] = 0;
            }
        }
        self.newest_minute = minute;
    }

    /// The counts of the last 60 minutes up to `now_ms`, oldest first: the last one is
    /// the minute under way.
    pub fn last_hour(&self, now_ms: u64) -> Vec<u64> {
        let mut ring = self.clone();
        ring.advance_to(now_ms / 60_000);
        (1..=MINUTES_KEPT)
            .map(|i| ring.counts[(ring.newest + i) % MINUTES_KEPT])
            .collect()
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub const FIVE_MINUTES: Duration = Duration::from_secs(300);
pub const ONE_HOUR: Duration = Duration::from_secs(3600);
pub const ONE_DAY: Duration = Duration::from_secs(86_400);
pub const FIFTEEN_MINUTES: Duration = Duration::from_secs(900);
/// The errors an integration's page lists.
pub const RECENT_ERRORS: usize = 10;

/// Everything the supervisor saw of one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub plugin: String,
    pub phase: ProcessPhase,
    pub pid: Option<u32>,
    pub restarts: u64,
    /// When the current process started (ms).
    pub started_ms: Option<u64>,
    /// When the supervisor first knew of it (ms).
    pub known_since_ms: u64,
    pub collects: bool,
    pub poll_interval: Duration,
    pub last_success_ms: Option<u64>,
    /// The newest event time committed (ms).
    pub last_event_ms: Option<u64>,
    /// From the newest event's time to its commit, for the last batch that had events.
    pub lag_ms: Option<u64>,
    pub consecutive_failures: u32,
    /// Consecutive failures that need a person (auth, permission, config).
    pub consecutive_refusals: u32,
    pub errors: Occurrences,
    /// The last [`RECENT_ERRORS`] errors, oldest first; the last is
    /// [`Facts::last_error`].
    pub recent_errors: VecDeque<LastError>,
    /// Collects and webhook deliveries that succeeded, for the error rate.
    pub successes: Occurrences,
    /// Events stored, per minute.
    pub events: PerMinute,
    pub breakers: Vec<Breaker>,
    pub dead_letters: Occurrences,
    pub webhooks_accepted: Occurrences,
    pub webhooks_refused: Occurrences,
    /// The last `Check`: when, and whether it passed.
    pub last_check: Option<(u64, bool)>,
    pub disabled: Option<Disabled>,
    pub paused: bool,
}

impl Facts {
    pub fn new(plugin: &str, now_ms: u64) -> Self {
        Self {
            plugin: plugin.to_owned(),
            phase: ProcessPhase::Starting,
            pid: None,
            restarts: 0,
            started_ms: None,
            known_since_ms: now_ms,
            collects: false,
            poll_interval: Duration::from_secs(30),
            last_success_ms: None,
            last_event_ms: None,
            lag_ms: None,
            consecutive_failures: 0,
            consecutive_refusals: 0,
            errors: Occurrences::default(),
            recent_errors: VecDeque::new(),
            successes: Occurrences::default(),
            events: PerMinute::default(),
            breakers: Vec::new(),
            dead_letters: Occurrences::default(),
            webhooks_accepted: Occurrences::default(),
            webhooks_refused: Occurrences::default(),
            last_check: None,
            disabled: None,
            paused: false,
        }
    }

    /// A collect, check or call failed.
    pub fn failed(&mut self, source: &'static str, class: ErrorClass, message: &str, now_ms: u64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if class.needs_action() {
            self.consecutive_refusals = self.consecutive_refusals.saturating_add(1);
        } else {
            self.consecutive_refusals = 0;
        }
        self.error(LastError {
            class,
            message: message.to_owned(),
            source,
            at_ms: now_ms,
        });
    }

    /// An error to count and show, whatever it does to the streaks.
    pub fn error(&mut self, error: LastError) {
        self.errors.add(error.at_ms, 1, ONE_HOUR);
        if self.recent_errors.len() == RECENT_ERRORS {
            self.recent_errors.pop_front();
        }
        self.recent_errors.push_back(error);
    }

    /// The last error it met.
    pub fn last_error(&self) -> Option<&LastError> {
        self.recent_errors.back()
    }

    /// Errors among the attempts of the last hour (`None` before any attempt).
    pub fn error_rate(&self, now_ms: u64) -> Option<f64> {
        let errors = self.errors.within(now_ms, ONE_HOUR);
        let attempts = errors + self.successes.within(now_ms, ONE_HOUR);
        #[allow(clippy::cast_precision_loss)]
        (attempts > 0).then(|| errors as f64 / attempts as f64)
    }

    /// A collect (or a passing check) succeeded: the failure streak ends.
    pub fn succeeded(&mut self, now_ms: u64) {
        self.successes.add(now_ms, 1, ONE_HOUR);
        self.last_success_ms = Some(now_ms);
        self.consecutive_failures = 0;
        self.consecutive_refusals = 0;
    }

    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if !self.collects {
            return Freshness::Unknown;
        }
        let Some(last) = self.last_success_ms else {
            return Freshness::Unknown;
        };
        let interval = millis(self.poll_interval).max(1);
        let age = now_ms.saturating_sub(last);
        if age > 5 * interval {
            Freshness::Stale
        } else if age > 2 * interval {
            Freshness::Late
        } else {
            Freshness::OnTime
        }
    }
}

/// The state the facts add up to, and why, in one sentence.
pub fn assess(facts: &Facts, now_ms: u64, config: &HealthConfig) -> (HealthState, String) {
    if let Some(disabled) = &facts.disabled {
        return (
            HealthState::Disabled,
            format!("disabled by {}: {}", disabled.by, disabled.reason),
        );
    }
    if facts.paused {
        return (HealthState::Paused, "paused by a flag".to_owned());
    }
    let error_text = |e: &LastError| format!("{} error in {}: {}", e.class, e.source, e.message);
    if facts.phase == ProcessPhase::Refused {
        let why = facts
            .last_error()
            .map_or_else(|| "the plugin was refused".to_owned(), error_text);
        return (HealthState::ActionRequired, why);
    }
    if let Some(error) = facts.last_error()
        && error.class.needs_action()
        && facts.consecutive_refusals > 0
    {
        return (HealthState::ActionRequired, error_text(error));
    }
    if facts.phase == ProcessPhase::CrashLoop {
        return (
            HealthState::Failing,
            format!(
                "crash loop: {} restarts{}",
                facts.restarts,
                facts
                    .last_error()
                    .map(|e| format!("; last: {}", e.message))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(open) = facts.breakers.iter().find(|b| b.state == "open") {
        return (
            HealthState::Failing,
            format!("circuit breaker open for {}", open.name),
        );
    }
    if facts.consecutive_failures >= config.failing_after.max(1)
        && let Some(error) = facts.last_error()
    {
        return (
            HealthState::Failing,
            format!(
                "{} consecutive failures; last: {}",
                facts.consecutive_failures,
                error_text(error)
            ),
        );
    }
    if matches!(
        facts.phase,
        ProcessPhase::Starting | ProcessPhase::Restarting
    ) {
        return (HealthState::Starting, "the plugin is starting".to_owned());
    }
    if facts.phase == ProcessPhase::Stopped {
        return (
            HealthState::Starting,
            "the plugin is not running".to_owned(),
        );
    }
    if facts.consecutive_failures > 0
        && let Some(error) = facts.last_error()
    {
        return (HealthState::Degraded, error_text(error));
    }
    if let Some(half) = facts.breakers.iter().find(|b| b.state == "half-open") {
        return (
            HealthState::Degraded,
            format!("circuit breaker half-open for {}", half.name),
        );
    }
    if facts.phase == ProcessPhase::Degraded {
        return (
            HealthState::Degraded,
            "the plugin missed heartbeats".to_owned(),
        );
    }
    match facts.freshness(now_ms) {
        Freshness::Late | Freshness::Stale => {
            return (
                HealthState::Degraded,
                format!(
                    "no successful collect for {}s (polls every {})",
                    now_ms.saturating_sub(facts.last_success_ms.unwrap_or(now_ms)) / 1000,
                    humantime::format_duration(facts.poll_interval)
                ),
            );
        }
        Freshness::Unknown if facts.collects && facts.last_success_ms.is_none() => {
            return (HealthState::Starting, "no collect finished yet".to_owned());
        }
        _ => {}
    }
    (HealthState::Healthy, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn running() -> Facts {
        let mut facts = Facts::new("github", NOW - 60_000);
        facts.phase = ProcessPhase::Running;
        facts.collects = true;
        facts.poll_interval = Duration::from_secs(10);
        facts.succeeded(NOW - 1_000);
        facts
    }

    fn state(facts: &Facts) -> HealthState {
        assess(facts, NOW, &HealthConfig::default()).0
    }

    #[test]
    fn a_running_integration_that_collects_on_time_is_healthy() {
        assert_eq!(state(&running()), HealthState::Healthy);
        let mut fresh = Facts::new("github", NOW);
        fresh.phase = ProcessPhase::Running;
        fresh.collects = true;
        assert_eq!(state(&fresh), HealthState::Starting);
    }

    #[test]
    fn a_refused_credential_needs_action_at_once_and_success_clears_it() {
        let mut facts = running();
        facts.failed("collect", ErrorClass::Auth, "401 Bad credentials", NOW);
        let (s, why) = assess(&facts, NOW, &HealthConfig::default());
        assert_eq!(s, HealthState::ActionRequired);
        assert!(why.contains("auth error in collect: 401"), "{why}");
        facts.succeeded(NOW);
        assert_eq!(state(&facts), HealthState::Healthy);
        assert_eq!(facts.errors.within(NOW, FIVE_MINUTES), 1, "the count stays");
    }

    #[test]
    fn transient_errors_degrade_then_fail_past_the_threshold() {
        let mut facts = running();
        facts.failed("collect", ErrorClass::Unavailable, "502", NOW);
        assert_eq!(state(&facts), HealthState::Degraded);
        facts.failed("collect", ErrorClass::Unavailable, "502", NOW);
        facts.failed("collect", ErrorClass::Timeout, "slow", NOW);
        assert_eq!(state(&facts), HealthState::Failing);
        // A transient error after a refusal ends the refusal streak.
        facts.failed("collect", ErrorClass::Permission, "403", NOW);
        assert_eq!(state(&facts), HealthState::ActionRequired);
        facts.failed("collect", ErrorClass::Unavailable, "502", NOW);
        assert_eq!(state(&facts), HealthState::Failing);
    }

    #[test]
    fn freshness_counts_poll_intervals() {
        let mut facts = running();
        facts.last_success_ms = Some(NOW - 15_000);
        assert_eq!(facts.freshness(NOW), Freshness::OnTime);
        facts.last_success_ms = Some(NOW - 25_000);
        assert_eq!(facts.freshness(NOW), Freshness::Late);
        assert_eq!(state(&facts), HealthState::Degraded);
        facts.last_success_ms = Some(NOW - 51_000);
        assert_eq!(facts.freshness(NOW), Freshness::Stale);
    }

    #[test]
    fn breakers_crash_loops_flags_and_disabling() {
        let mut facts = running();
        facts.breakers.push(Breaker {
            name: "api.github.com".into(),
            state: "half-open".into(),
            detail: String::new(),
            open_since_ms: None,
        });
        assert_eq!(state(&facts), HealthState::Degraded);
        facts.breakers[0].state = "open".into();
        assert_eq!(state(&facts), HealthState::Failing);
        facts.breakers.clear();
        facts.phase = ProcessPhase::CrashLoop;
        assert_eq!(state(&facts), HealthState::Failing);
        facts.paused = true;
        assert_eq!(state(&facts), HealthState::Paused);
        facts.disabled = Some(Disabled {
            by: "operator".into(),
            reason: "maintenance".into(),
        });
        let (s, why) = assess(&facts, NOW, &HealthConfig::default());
        assert_eq!(s, HealthState::Disabled);
        assert_eq!(why, "disabled by operator: maintenance");
    }

    #[test]
    fn per_minute_counts_keep_one_hour_oldest_first() {
        let mut events = PerMinute::default();
        let minute = 60_000;
        events.add(NOW - 2 * 3_600_000, 99);
        events.add(NOW - 59 * minute, 3);
        events.add(NOW - 2 * minute, 5);
        events.add(NOW - 2 * minute, 1);
        events.add(NOW, 7);
        // A late arrival for a minute still kept lands in that minute.
        events.add(NOW - minute, 2);
        let hour = events.last_hour(NOW);
        assert_eq!(hour.len(), MINUTES_KEPT);
        assert_eq!(hour[0], 3);
        assert_eq!(&hour[57..], &[6, 2, 7]);
        assert_eq!(
            hour.iter().sum::<u64>(),
            18,
            "the count from two hours ago is gone"
        );
        // Read later, the minutes move left and fall off.
        let later = events.last_hour(NOW + 3 * minute);
        assert_eq!(&later[54..], &[6, 2, 7, 0, 0, 0]);
        assert_eq!(events.last_hour(NOW + 61 * minute), vec![0; MINUTES_KEPT]);
    }

    #[test]
    fn recent_errors_keep_the_last_ten_and_the_rate_counts_attempts() {
        let mut facts = running();
        assert_eq!(facts.error_rate(NOW), Some(0.0));
        for i in 0..12 {
            facts.failed(
                "collect",
                ErrorClass::Unavailable,
                &format!("502 #{i}"),
                NOW,
            );
        }
        assert_eq!(facts.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(facts.recent_errors[0].message, "502 #2");
        assert_eq!(facts.recent_errors[9].message, "502 #11");
        // 12 errors, and the success of `running()` with three more.
        for _ in 0..3 {
            facts.succeeded(NOW + 1_500);
        }
        let rate = facts.error_rate(NOW + 1_500).expect("attempts");
        assert!((rate - 0.75).abs() < 1e-9, "{rate}");
        assert_eq!(Facts::new("github", NOW).error_rate(NOW), None);
    }

    #[test]
    fn occurrences_keep_their_window() {
        let mut seen = Occurrences::default();
        seen.add(NOW - 2 * 3_600_000, 5, ONE_HOUR);
        seen.add(NOW - 400_000, 2, ONE_HOUR);
        seen.add(NOW - 100, 1, ONE_HOUR);
        seen.add(NOW, 1, ONE_HOUR);
        assert_eq!(seen.within(NOW, FIVE_MINUTES), 2);
        assert_eq!(seen.within(NOW, ONE_HOUR), 4);
    }
}
