//! The `[handoff]` section of `config.toml`: agents, their credentials and
//! the queues that ring them.
//!
//! ```toml
//! [handoff]
//! realm = "frontdoor"                   # digest realm agents' phones see
//! digest_algorithms = ["MD5"]          # or ["SHA-256", "MD5"], see below
//! wrap_up_secs = 10                     # after a call, before the next
//! default_queue = "general"             # for transfers naming no queue
//!
//! [[handoff.agent]]
//! id = "agent1"                         # SIP user the phone registers as
//! password_env = "FRONTDOOR_AGENT1_PASSWORD"   # or password = "..."
//!
//! [[handoff.agent]]
//! id = "out-of-hours"
//! uri = "sip:2000@192.0.2.40:5060"      # external: needs no registration (a host name is looked up and followed)
//!
//! [[handoff.queue]]
//! name = "safeguarding"
//! members = ["agent1", "out-of-hours"]
//! strategy = "longest_idle"             # or "round_robin", "ring_all"
//! ring_timeout_secs = 15
//! max_wait_secs = 300                   # then overflow (never for risk calls)
//! overflow = "general"                  # another queue; none: give up
//! hold_music = "prompts/hold.wav"
//! announce_every_secs = 30              # position in queue
//! hours = ["mon-fri 08:30-17:00", "sat 09:00-12:30"]   # local time; absent: always open
//! closed_message = "Our advisers are available Monday to Friday, half past eight to five."
//!
//! [[handoff.queue]]
//! name = "council-pbx"
//! members = ["out-of-hours"]
//! transfer = "refer"                    # hand the call away by REFER; default "bridged"
//! refer_to = "sip:2000@192.0.2.40"      # default: the first member with a uri
//!
//! [handoff.feature_codes]               # dialled from a registered agent's phone
//! available = "*1"
//! break = "*2"
//! offline = "*3"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::dialplan::OpeningHours;
use crate::sip::{AgentAccount, DigestAlgorithm, RegistrarConfig, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffSection {
    pub realm: String,
    /// Challenges offered, most preferred first. MD5 alone by default:
    /// baresip 1.0 (libre) fails registration outright ("Function not
    /// implemented") when any challenge names SHA-256, even after an MD5
    /// one. Add "SHA-256" first once every agent phone supports RFC 8760.
    pub digest_algorithms: Vec<String>,
    pub nonce_ttl_secs: u64,
    pub min_expires_secs: u64,
    pub max_expires_secs: u64,
    pub default_expires_secs: u64,
    /// Wrong digest answers before a user+address is refused with 403.
    pub max_auth_failures: u32,
    pub lockout_secs: u64,
    pub wrap_up_secs: u64,
    pub default_queue: Option<String>,
    pub agent: Vec<AgentSpec>,
    pub queue: Vec<QueueSpec>,
    /// Numbers an agent's own phone dials to change the agent's state.
    pub feature_codes: FeatureCodes,
}

/// Numbers a registered agent dials to change state without the
/// dashboard. Frontdoor answers, plays a short confirmation and hangs up.
/// An empty code is switched off.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureCodes {
    pub available: String,
    #[serde(rename = "break")]
    pub on_break: String,
    pub offline: String,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        FeatureCodes {
            available: "*1".into(),
            on_break: "*2".into(),
            offline: "*3".into(),
        }
    }
}

impl FeatureCodes {
    /// The state a dialled number asks for, if it is a feature code.
    pub fn state_for(&self, dialled: &str) -> Option<super::AgentState> {
        let dialled = dialled.trim();
        if dialled.is_empty() {
            return None;
        }
        [
            (&self.available, super::AgentState::Available),
            (&self.on_break, super::AgentState::Break),
            (&self.offline, super::AgentState::Offline),
        ]
        .into_iter()
        .find(|(code, _)| !code.is_empty() && code.as_str() == dialled)
        .map(|(_, state)| state)
    }
}

/// How a queue hands its callers to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// Frontdoor stays in the middle (B2BUA): recorded, supervised.
    #[default]
    Bridged,
    /// Blind transfer by REFER to the queue's `refer_to`; bridged in this
    /// queue when the far end refuses or the transfer fails.
    Refer,
}

impl Default for HandoffSection {
    fn default() -> Self {
        HandoffSection {
            realm: "frontdoor".into(),
            digest_algorithms: vec!["MD5".into()],
            nonce_ttl_secs: 300,
            min_expires_secs: 30,
            max_expires_secs: 3600,
            default_expires_secs: 600,
            max_auth_failures: 3,
            lockout_secs: 300,
            wrap_up_secs: 10,
            default_queue: None,
            agent: Vec::new(),
            queue: Vec::new(),
            feature_codes: FeatureCodes::default(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub id: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Environment variable holding the password (keeps it out of the file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A fixed address instead of a registration.
    #[serde(default)]
    pub uri: Option<String>,
}

impl std::fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSpec")
            .field("id", &self.id)
            .field("uri", &self.uri)
            .field("password_env", &self.password_env)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RingStrategy {
    /// The available agent who finished a call longest ago.
    #[default]
    LongestIdle,
    /// Members in turn, starting after the one rung last.
    RoundRobin,
    /// Every available member at once; the first to answer takes it.
    RingAll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    pub name: String,
    pub members: Vec<String>,
    #[serde(default)]
    pub strategy: RingStrategy,
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: f64,
    #[serde(default)]
    pub max_wait_secs: Option<u64>,
    #[serde(default)]
    pub overflow: Option<String>,
    #[serde(default)]
    pub hold_music: Option<PathBuf>,
    #[serde(default = "default_announce")]
    pub announce_every_secs: u64,
    #[serde(default)]
    pub transfer: TransferMode,
    /// REFER target for `transfer = "refer"`; default: the first member
    /// configured with a `uri`.
    #[serde(default)]
    pub refer_to: Option<String>,
    /// When routine callers are put through, as dialplan route hours
    /// (`"mon-fri 08:30-17:00"`, the engine's local time); absent: always.
    /// Closed only turns routine callers away: risk callers are still
    /// queued, and agents who are available get them out of hours.
    #[serde(default)]
    pub hours: Option<Vec<String>>,
    /// Spoken to a routine caller when this queue and its overflows are
    /// closed; default [`DEFAULT_CLOSED_MESSAGE`].
    #[serde(default)]
    pub closed_message: Option<String>,
}

/// What a routine caller hears when the team that can help is closed and
/// the queue's configuration says nothing more specific.
pub const DEFAULT_CLOSED_MESSAGE: &str = "The team that can help is closed right now.";

/// A closed message is one or two spoken sentences; a page of text would
/// hold the caller for minutes of synthesis and speech.
const MAX_CLOSED_MESSAGE_CHARS: usize = 500;

fn default_ring_timeout() -> f64 {
    15.0
}

fn default_announce() -> u64 {
    30
}

impl QueueSpec {
    pub fn ring_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ring_timeout_secs.clamp(1.0, 300.0))
    }

    /// The parsed `hours`; `None` when the queue is always open. The error
    /// names the queue, for start-up validation.
    pub fn opening_hours(&self) -> Result<Option<OpeningHours>, String> {
        let Some(lines) = &self.hours else {
            return Ok(None);
        };
        if lines.is_empty() {
            // An empty list would mean "never open", which is almost
            // certainly a mistake; leaving `hours` out means always open.
            return Err(format!(
                "handoff.queue {:?}: hours is empty; list windows like \"mon-fri 08:30-17:00\" or leave it out for always open",
                self.name
            ));
        }
        OpeningHours::parse(lines)
            .map(Some)
            .map_err(|why| format!("handoff.queue {:?}: hours: {why}", self.name))
    }

    pub fn closed_message(&self) -> &str {
        self.closed_message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_CLOSED_MESSAGE)
    }
}

impl HandoffSection {
    /// Where a `transfer = "refer"` queue sends its callers: its
    /// `refer_to`, else its first member with a fixed address.
    pub fn refer_target(&self, queue: &QueueSpec) -> Option<String> {
        queue.refer_to.clone().or_else(|| {
            queue.members.iter().find_map(|member| {
                self.agent
                    .iter()
                    .find(|a| a.id == *member)
                    .and_then(|a| a.uri.clone())
            })
        })
    }

    /// One queue against this section: members are its agents, the
    /// overflow is one of its queues, hours and transfer are usable. Also
    /// what a queue defined in a dialplan file is checked with once merged,
    /// so both places accept the same queues.
    pub fn check_queue(&self, queue: &QueueSpec) -> Result<(), String> {
        self.check_queue_with(queue, true)
    }

    /// `queues_known`: every queue is in this section, so an overflow must
    /// name one of them; false while dialplan queues are not merged yet.
    fn check_queue_with(&self, queue: &QueueSpec, queues_known: bool) -> Result<(), String> {
        if let Some(unknown) = queue
            .members
            .iter()
            .find(|m| !self.agent.iter().any(|a| a.id == **m))
        {
            return Err(format!(
                "handoff.queue {:?}: member {unknown:?} is not a handoff.agent",
                queue.name
            ));
        }
        if let Some(overflow) = &queue.overflow
            && queues_known
            && !self.queue.iter().any(|q| q.name == *overflow)
        {
            return Err(format!(
                "handoff.queue {:?}: overflow {overflow:?} is not a queue",
                queue.name
            ));
        }
        if let Some(target) = &queue.refer_to
            && crate::sip::message::Uri::parse(target).map_or(true, |u| !u.is_sip())
        {
            return Err(format!(
                "handoff.queue {:?}: refer_to {target:?} is not a sip: URI",
                queue.name
            ));
        }
        queue.opening_hours()?;
        if let Some(message) = &queue.closed_message
            && message.chars().count() > MAX_CLOSED_MESSAGE_CHARS
        {
            return Err(format!(
                "handoff.queue {:?}: closed_message is longer than {MAX_CLOSED_MESSAGE_CHARS} characters",
                queue.name
            ));
        }
        if queue.transfer == TransferMode::Refer && self.refer_target(queue).is_none() {
            return Err(format!(
                "handoff.queue {:?}: transfer = \"refer\" needs refer_to or a member with a uri",
                queue.name
            ));
        }
        Ok(())
    }

    /// The configuration is consistent: every queue member is an agent,
    /// overflows name queues, agents have a password or an address.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_with(true)
    }

    /// As [`Self::validate`] for config.toml on its own: the queues an
    /// overflow or `default_queue` names may be defined in dialplan files,
    /// so those names are checked once the dialplan's queues are merged
    /// (`Dialplan::handoff_with_queues`, at start-up and by `frontdoor
    /// dialplan check`).
    pub fn validate_without_dialplan_queues(&self) -> Result<(), String> {
        self.validate_with(false)
    }

    fn validate_with(&self, queues_known: bool) -> Result<(), String> {
        for algorithm in &self.digest_algorithms {
            if DigestAlgorithm::parse(algorithm).is_none() {
                return Err(format!(
                    "handoff.digest_algorithms: {algorithm:?} is neither \"SHA-256\" nor \"MD5\""
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for agent in &self.agent {
            if agent.id.is_empty() || !seen.insert(agent.id.as_str()) {
                return Err(format!(
                    "handoff.agent: id {:?} is empty or repeated",
                    agent.id
                ));
            }
            let has_password = agent.password.is_some() || agent.password_env.is_some();
            if has_password == agent.uri.is_some() {
                return Err(format!(
                    "handoff.agent {:?}: give either a password (password or password_env) or a uri",
                    agent.id
                ));
            }
            if let Some(uri) = &agent.uri
                && crate::sip::message::Uri::parse(uri).map_or(true, |u| !u.is_sip())
            {
                return Err(format!(
                    "handoff.agent {:?}: uri {uri:?} is not a sip: URI",
                    agent.id
                ));
            }
        }
        for queue in &self.queue {
            self.check_queue_with(queue, queues_known)?;
        }
        let codes = &self.feature_codes;
        let mut seen_codes = std::collections::HashSet::new();
        for code in [&codes.available, &codes.on_break, &codes.offline] {
            if code.is_empty() {
                continue;
            }
            if code.len() > 16
                || !code
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
            {
                return Err(format!(
                    "handoff.feature_codes: {code:?} must be up to 16 digits, * or #"
                ));
            }
            if !seen_codes.insert(code.as_str()) {
                return Err(format!("handoff.feature_codes: {code:?} is used twice"));
            }
        }
        if let Some(default) = &self.default_queue
            && queues_known
            && !self.queue.iter().any(|q| q.name == *default)
        {
            return Err(format!("handoff.default_queue {default:?} is not a queue"));
        }
        Ok(())
    }

    /// The registrar's settings, with passwords read from the environment
    /// where configured. An unset variable leaves that agent unable to
    /// register (and says so), rather than registering without a password.
    pub fn registrar_config(&self) -> RegistrarConfig {
        let accounts = self
            .agent
            .iter()
            .filter(|a| a.uri.is_none())
            .filter_map(|a| {
                let password = match (&a.password, &a.password_env) {
                    (Some(p), _) => Some(p.clone()),
                    (None, Some(var)) => std::env::var(var).ok().filter(|p| !p.is_empty()),
                    (None, None) => None,
                };
                if password.is_none() {
                    tracing::warn!(agent = %a.id, "no password available; this agent cannot register");
                }
                password.map(|p| AgentAccount {
                    user: a.id.clone(),
                    password: Secret::new(p),
                })
            })
            .collect();
        RegistrarConfig {
            realm: self.realm.clone(),
            accounts,
            algorithms: self
                .digest_algorithms
                .iter()
                .filter_map(|a| DigestAlgorithm::parse(a))
                .collect(),
            nonce_ttl: Duration::from_secs(self.nonce_ttl_secs),
            min_expires: Duration::from_secs(self.min_expires_secs),
            max_expires: Duration::from_secs(self.max_expires_secs),
            default_expires: Duration::from_secs(self.default_expires_secs),
            max_failures: self.max_auth_failures.max(1),
            failure_window: Duration::from_secs(self.lockout_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_the_documented_example() {
        let text = r#"
realm = "council"
digest_algorithms = ["SHA-256", "MD5"]
default_queue = "general"
[[agent]]
id = "agent1"
password = "pw"
[[agent]]
id = "pbx"
uri = "sip:2000@192.0.2.40:5060"
[[queue]]
name = "general"
members = ["agent1", "pbx"]
strategy = "ring_all"
[[queue]]
name = "safeguarding"
members = ["agent1"]
overflow = "general"
max_wait_secs = 120
"#;
        let section: HandoffSection = toml::from_str(text).unwrap();
        section.validate().unwrap();
        assert_eq!(section.queue[0].strategy, RingStrategy::RingAll);
        assert_eq!(section.queue[1].ring_timeout(), Duration::from_secs(15));
        let registrar = section.registrar_config();
        assert_eq!(registrar.accounts.len(), 1);
        assert_eq!(registrar.algorithms.len(), 2);
        assert!(!format!("{section:?}").contains("\"pw\""));
    }

    #[test]
    fn refer_queues_and_feature_codes() {
        let text = r#"
[[agent]]
id = "pbx"
uri = "sip:2000@192.0.2.40:5060"
[[queue]]
name = "away"
members = ["pbx"]
transfer = "refer"
[feature_codes]
available = "*71"
"#;
        let section: HandoffSection = toml::from_str(text).unwrap();
        section.validate().unwrap();
        assert_eq!(section.queue[0].transfer, TransferMode::Refer);
        assert_eq!(
            section.refer_target(&section.queue[0]).as_deref(),
            Some("sip:2000@192.0.2.40:5060")
        );
        let codes = &section.feature_codes;
        assert_eq!(
            codes.state_for("*71"),
            Some(super::super::AgentState::Available)
        );
        assert_eq!(codes.state_for("*2"), Some(super::super::AgentState::Break));
        assert_eq!(codes.state_for("*1"), None);
        assert_eq!(codes.state_for(""), None);
        assert_eq!(HandoffSection::default().queue.len(), 0);
    }

    #[test]
    fn rejects_inconsistent_sections() {
        let bad = [
            "[[queue]]\nname='q'\nmembers=['nobody']",
            "[[agent]]\nid='a'",
            "[[agent]]\nid='a'\npassword='p'\nuri='sip:x@192.0.2.1'",
            "[[agent]]\nid='a'\nuri='http://x'",
            "digest_algorithms=['SHA-512']",
            "default_queue='missing'",
            "[[agent]]\nid='a'\npassword='p'\n[[queue]]\nname='q'\nmembers=['a']\noverflow='nope'",
            "[[agent]]\nid='a'\npassword='p'\n[[queue]]\nname='q'\nmembers=['a']\ntransfer='refer'",
            "[[queue]]\nname='q'\nmembers=[]\nrefer_to='mailto:x'",
            "[feature_codes]\navailable='*1'\noffline='*1'",
            "[feature_codes]\navailable='star-one'",
        ];
        for text in bad {
            let section: HandoffSection = toml::from_str(text).unwrap();
            assert!(section.validate().is_err(), "{text}");
        }
    }

    #[test]
    fn queue_hours_parse_and_bad_hours_name_the_queue() {
        let text = r#"
[[agent]]
id = "a"
password = "p"
[[queue]]
name = "housing"
members = ["a"]
hours = ["mon-fri 08:30-17:00", "sat 09:00-12:30"]
closed_message = "Our advisers are available Monday to Friday, half past eight to five."
overflow = "general"
[[queue]]
name = "general"
members = ["a"]
"#;
        let section: HandoffSection = toml::from_str(text).unwrap();
        section.validate().unwrap();
        let hours = section.queue[0].opening_hours().unwrap().unwrap();
        let at = |d: u32, h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, d)
                .and_then(|day| day.and_hms_opt(h, m, 0))
                .unwrap()
        };
        // 23 Nov 2026 is a Monday, 28th a Saturday, 29th a Sunday.
        assert!(hours.is_open(at(23, 8, 30)));
        assert!(!hours.is_open(at(23, 17, 0)));
        assert!(hours.is_open(at(28, 12, 29)));
        assert!(!hours.is_open(at(29, 10, 0)));
        assert!(
            section.queue[0]
                .closed_message()
                .starts_with("Our advisers")
        );
        assert_eq!(section.queue[1].opening_hours(), Ok(None));
        assert_eq!(section.queue[1].closed_message(), DEFAULT_CLOSED_MESSAGE);

        let base = "[[agent]]\nid='a'\npassword='p'\n[[queue]]\nname='housing'\nmembers=['a']\n";
        for bad in [
            "hours=['someday 9-5']",
            "hours=['mon-fri 17:00-08:30x']",
            "hours=[]",
            &format!(
                "closed_message='{}'",
                "x".repeat(MAX_CLOSED_MESSAGE_CHARS + 1)
            ),
        ] {
            let section: HandoffSection = toml::from_str(&format!("{base}{bad}")).unwrap();
            let error = section.validate().unwrap_err();
            assert!(error.contains("\"housing\""), "{bad}: {error}");
        }
        let blank: HandoffSection = toml::from_str(&format!("{base}closed_message='  '")).unwrap();
        blank.validate().unwrap();
        assert_eq!(blank.queue[0].closed_message(), DEFAULT_CLOSED_MESSAGE);
    }
}
