//! Dialplans: which number goes where, and what happens on the call.
//!
//! Files in the dialplan directory (`*.toml`) are read in name order; routes
//! are tried in that order and the first match wins. A broken file is a
//! [`DialplanError`] naming the file, the line and the reason — it stops
//! start-up (`frontdoor serve`) and is what `frontdoor dialplan check` prints,
//! so an admin's typo never turns into a dropped call at run time.
//!
//! ```toml
//! [[route]]
//! name = "main"
//! match.number = "*"            # dialled number: "*", exact, or prefix "01332*"
//! match.caller = "*"            # optional: calling number, same patterns
//! ring_secs = 1.0               # optional: ring before answering
//! actions = [
//!   { play = "prompts/welcome.wav" },
//!   { record = { max_secs = 30 } },
//!   { hangup = {} },
//! ]
//!
//! [route.hours]                 # optional: opening hours (engine's local time)
//! open = ["mon-fri 08:30-17:00", "sat 09:00-12:30"]
//! closed_actions = [ { play = "prompts/closed.wav" }, { hangup = {} } ]
//! ```
//!
//! Sending callers straight to people (agents are configured in `[handoff]`
//! of config.toml, queues there or in a dialplan file's `[[queue]]`;
//! [`Dialplan::check_handoff`] checks that every name used here exists):
//!
//! ```toml
//! actions = [
//!   { transfer = { queue = "general" } },                  # queue's strategy rings agents
//!   { transfer = { agent = "agent1" } },                   # only this agent (default queue's hold music)
//!   { transfer = { uri = "sip:2000@192.0.2.40", mode = "blind" } },  # REFER; bridged to the default queue if refused
//!   { transfer = { queue = "general", unavailable = "prompts/no-one.wav" } },
//!   { record = { max_secs = 60 } },                        # runs when nobody took the call
//! ]
//! ```
//!
//! A queue can live with the routes that use it, with exactly the fields of
//! config.toml's `[[handoff.queue]]`. Its members are config.toml agents
//! (credentials never belong here), its name is defined once across the
//! files and config.toml, and `hold_music` is relative to the file, like
//! prompts ([`Dialplan::handoff_with_queues`] merges it at start-up):
//!
//! ```toml
//! [[queue]]
//! name = "billing"
//! members = ["agent1", "agent2"]
//! strategy = "ring_all"
//! max_wait_secs = 120
//! overflow = "general"                 # a queue from either place
//! hours = ["mon-fri 09:00-17:00"]
//! hold_music = "prompts/hold.wav"
//! ```

mod hours;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

pub use hours::{OpeningHours, WeeklyWindow};

use crate::config::line_col;
use crate::handoff::{HandoffSection, QueueSpec};

/// Decoded 8 kHz mono audio shared by every call that plays it.
pub type Samples = Arc<[i16]>;

#[derive(Debug, Error)]
pub enum DialplanError {
    #[error("{}:{line}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// config.toml's `[handoff]` names a queue that neither it nor any
    /// dialplan file defines.
    #[error("config [handoff]: {0} (in config.toml or any dialplan file)")]
    Handoff(String),
}

impl DialplanError {
    fn at(path: &Path, text: &str, span: std::ops::Range<usize>, message: String) -> Self {
        DialplanError::At {
            path: path.to_path_buf(),
            line: line_col(text, span.start).0,
            message,
        }
    }
    fn file(path: &Path, message: impl Into<String>) -> Self {
        DialplanError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

// ---- file format -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    route: Vec<RouteSpec>,
    /// Queues with exactly `[[handoff.queue]]`'s fields; their members are
    /// agents from config.toml, which keeps the credentials.
    #[serde(default)]
    queue: Vec<Spanned<QueueSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    name: Spanned<String>,
    #[serde(rename = "match", default)]
    matcher: MatchSpec,
    actions: Spanned<Vec<Spanned<ActionSpec>>>,
    hours: Option<HoursSpec>,
    /// Let the caller hear ringing this long before answering.
    ring_secs: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    number: Option<Spanned<String>>,
    caller: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursSpec {
    open: Spanned<Vec<String>>,
    closed_actions: Spanned<Vec<Spanned<ActionSpec>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ActionSpec {
    Play(String),
    Record {
        max_secs: u64,
    },
    Pause {
        secs: f64,
    },
    Hangup {},
    /// The conversational assistant: listens, answers, completes requests
    /// and escalates to people.
    Assistant {
        #[serde(default)]
        silence_reprompt_secs: Option<f64>,
        #[serde(default)]
        max_reprompts: Option<u32>,
    },
    /// Hand the caller to a person: a queue, one agent, or another SIP
    /// address by blind transfer.
    Transfer(TransferSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferSpec {
    queue: Option<String>,
    agent: Option<String>,
    uri: Option<String>,
    mode: Option<String>,
    /// Prompt played when nobody can take the call; then the next action runs.
    unavailable: Option<String>,
}

// ---- compiled form ----------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.is_empty() || body.contains('*') {
            return Err(format!(
                "pattern {text:?}: use \"*\", an exact number or a prefix ending in \"*\""
            ));
        }
        if !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+#-._".contains(c))
        {
            return Err(format!(
                "pattern {text:?} has characters a number cannot have"
            ));
        }
        let body = normalise_number(body);
        Ok(if prefix {
            Pattern::Prefix(body)
        } else {
            Pattern::Exact(body)
        })
    }

    pub fn matches(&self, number: &str) -> bool {
        let number = normalise_number(number);
        match self {
            Pattern::Any => true,
            Pattern::Exact(n) => number == *n,
            Pattern::Prefix(p) => number.starts_with(p.as_str()),
        }
    }
}

/// Numbers arrive as `01332…`, `+441332…` or with visual separators; routes
/// compare them without the separators.
fn normalise_number(n: &str) -> String {
    n.chars().filter(|c| !"-._ ".contains(*c)).collect()
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub path: PathBuf,
    pub samples: Samples,
}

#[derive(Debug, Clone)]
pub enum Action {
    Play(Prompt),
    /// Record the caller for up to this long (the whole call is recorded in
    /// stereo while a route records; this is how long Frontdoor listens).
    Record {
        max: Duration,
    },
    Pause(Duration),
    Hangup,
    Assistant(AssistantOptions),
    Transfer(TransferAction),
}

/// A dialplan's hand-off to people. With neither `queue` nor `agent` the
/// configuration's default queue serves the caller.
#[derive(Debug, Clone)]
pub struct TransferAction {
    pub queue: Option<String>,
    /// Ring only this agent (held meanwhile with the queue's music).
    pub agent: Option<String>,
    /// Hand the call away by REFER to this `sip:` URI first; when the far
    /// end refuses, the caller is bridged through `queue` instead.
    pub refer_to: Option<String>,
    /// What the caller hears when nobody can take the call (hand-off not
    /// configured, the queue's maximum wait over); the next action follows.
    pub unavailable: Option<Prompt>,
    /// Where the action is written: configuration problems found after
    /// parsing (an unknown queue) still name the line.
    pub line: usize,
}

/// Per-route assistant options (everything else comes from configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantOptions {
    pub silence_reprompt: Duration,
    pub max_reprompts: u32,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub file: PathBuf,
    pub number: Pattern,
    pub caller: Pattern,
    pub actions: Vec<Action>,
    pub hours: Option<(OpeningHours, Vec<Action>)>,
    /// How long the caller hears ringing (180) before Frontdoor answers.
    pub ring: Duration,
}

impl Route {
    /// The actions for a call arriving at local time `now`.
    pub fn actions_at(&self, now: chrono::NaiveDateTime) -> &[Action] {
        match &self.hours {
            Some((hours, closed)) if !hours.is_open(now) => closed,
            _ => &self.actions,
        }
    }

    /// Calls on this route are recorded (stereo) when it records the caller
    /// or runs the assistant (whose conversations are kept for review).
    pub fn records(&self) -> bool {
        // A transfer keeps the caller's side of the conversation with the
        // agent on record, as the assistant's hand-offs do.
        let has_record = |actions: &[Action]| {
            actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Record { .. } | Action::Assistant(_) | Action::Transfer(_)
                )
            })
        };
        has_record(&self.actions) || self.hours.as_ref().is_some_and(|(_, c)| has_record(c))
    }
}

/// A `[[queue]]` from a dialplan file, kept with where it was written so
/// that checks against the configuration can name the file and line.
#[derive(Debug, Clone)]
pub struct DialplanQueue {
    /// `hold_music` is already resolved against the file's directory.
    pub spec: QueueSpec,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    pub routes: Vec<Route>,
    pub queues: Vec<DialplanQueue>,
}

impl Dialplan {
    /// Whether any route needs the speech models and the answer engine.
    pub fn uses_assistant(&self) -> bool {
        let uses = |a: &[Action]| a.iter().any(|a| matches!(a, Action::Assistant(_)));
        self.routes
            .iter()
            .any(|r| uses(&r.actions) || r.hours.as_ref().is_some_and(|(_, c)| uses(c)))
    }

    /// Loads every `*.toml` in `dir`. `load_prompt` decodes a WAV into 8 kHz
    /// mono (the engine passes the media layer's loader) so that a missing or
    /// unreadable prompt is caught here, not during a call.
    pub fn load(
        dir: &Path,
        load_prompt: &mut dyn FnMut(&Path) -> Result<Samples, String>,
    ) -> Result<Dialplan, DialplanError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            DialplanError::file(dir, format!("cannot read dialplan directory: {e}"))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DialplanError::file(dir, "no *.toml dialplan files"));
        }
        let mut plan = Dialplan::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| DialplanError::file(&file, format!("cannot read: {e}")))?;
            let (routes, queues) = parse_file(&file, &text, &mut *load_prompt)?;
            plan.routes.extend(routes);
            for queue in queues {
                if let Some(first) = plan.queues.iter().find(|q| q.spec.name == queue.spec.name) {
                    return Err(DialplanError::At {
                        path: queue.file,
                        line: queue.line,
                        message: format!(
                            "queue {:?} is already defined in {}:{}",
                            queue.spec.name,
                            first.file.display(),
                            first.line
                        ),
                    });
                }
                plan.queues.push(queue);
            }
        }
        if plan.routes.is_empty() {
            return Err(DialplanError::file(
                dir,
                "the dialplan files define no [[route]]",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for route in &plan.routes {
            if !names.insert(route.name.as_str()) {
                return Err(DialplanError::file(
                    &route.file,
                    format!("route name {:?} is used twice", route.name),
                ));
            }
        }
        Ok(plan)
    }

    /// The `[handoff]` section the engine runs with: config.toml's queues
    /// followed by this dialplan's. A queue name defined in both places, a
    /// member that is not a config.toml agent, or a queue the hand-off
    /// would refuse is an error at the queue's file and line.
    pub fn handoff_with_queues(
        &self,
        handoff: &HandoffSection,
    ) -> Result<HandoffSection, DialplanError> {
        let mut merged = handoff.clone();
        for queue in &self.queues {
            let at = |message: String| DialplanError::At {
                path: queue.file.clone(),
                line: queue.line,
                message,
            };
            let name = &queue.spec.name;
            if handoff.queue.iter().any(|q| q.name == *name) {
                return Err(at(format!(
                    "queue {name:?} is already defined in config.toml [[handoff.queue]]"
                )));
            }
            if let Some(unknown) = queue
                .spec
                .members
                .iter()
                .find(|m| !handoff.agent.iter().any(|a| a.id == **m))
            {
                let agents: Vec<&str> = handoff.agent.iter().map(|a| a.id.as_str()).collect();
                return Err(at(format!(
                    "queue {name:?}: member {unknown:?} is not a [[handoff.agent]] in config.toml (agents: {})",
                    if agents.is_empty() {
                        "none".to_owned()
                    } else {
                        agents.join(", ")
                    }
                )));
            }
            merged.queue.push(queue.spec.clone());
        }
        // Overflows may name queues from either place, so the rest of the
        // checks run once every queue is known.
        for queue in &self.queues {
            merged
                .check_queue(&queue.spec)
                .map_err(|message| DialplanError::At {
                    path: queue.file.clone(),
                    line: queue.line,
                    message,
                })?;
        }
        // config.toml's own queues, overflows and default queue, now that
        // the dialplan's queues are known.
        merged.validate().map_err(DialplanError::Handoff)?;
        Ok(merged)
    }

    /// Checks every `transfer` action against the `[handoff]`
    /// configuration: the queues and agents it names exist, and a queue
    /// serves it. The error names the action's file and line, like a
    /// syntax error, so `frontdoor dialplan check` catches it before a
    /// caller does.
    pub fn check_handoff(&self, handoff: &HandoffSection) -> Result<(), DialplanError> {
        for route in &self.routes {
            let closed = route.hours.as_ref().map(|(_, c)| c.as_slice());
            for action in route.actions.iter().chain(closed.unwrap_or(&[])) {
                let Action::Transfer(transfer) = action else {
                    continue;
                };
                if let Err(message) = check_transfer(transfer, handoff) {
                    return Err(DialplanError::At {
                        path: route.file.clone(),
                        line: transfer.line,
                        message: format!("route {:?}: {message}", route.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// The first route whose patterns match.
    pub fn route(&self, dialled: &str, caller: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.number.matches(dialled) && r.caller.matches(caller))
    }
}

fn parse_file(
    path: &Path,
    text: &str,
    load_prompt: &mut dyn FnMut(&Path) -> Result<Samples, String>,
) -> Result<(Vec<Route>, Vec<DialplanQueue>), DialplanError> {
    let spec: FileSpec = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        DialplanError::at(path, text, span, e.message().trim().to_string())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut routes = Vec::new();
    for r in spec.route {
        let name_span = r.name.span();
        let name = r.name.into_inner();
        if name.trim().is_empty() {
            return Err(DialplanError::at(
                path,
                text,
                name_span,
                "route name is empty".into(),
            ));
        }
        let pattern = |p: Option<Spanned<String>>| -> Result<Pattern, DialplanError> {
            match p {
                None => Ok(Pattern::Any),
                Some(p) => {
                    let span = p.span();
                    Pattern::parse(p.get_ref()).map_err(|m| DialplanError::at(path, text, span, m))
                }
            }
        };
        let number = pattern(r.matcher.number)?;
        let caller = pattern(r.matcher.caller)?;
        let actions = compile_actions(path, text, base, r.actions, &mut *load_prompt)?;
        let hours = match r.hours {
            None => None,
            Some(h) => {
                let span = h.open.span();
                let open = OpeningHours::parse(h.open.get_ref())
                    .map_err(|m| DialplanError::at(path, text, span, m))?;
                let closed =
                    compile_actions(path, text, base, h.closed_actions, &mut *load_prompt)?;
                Some((open, closed))
            }
        };
        let ring = match r.ring_secs {
            None => Duration::ZERO,
            Some(s) => {
                let secs = *s.get_ref();
                if !(0.0..=60.0).contains(&secs) {
                    return Err(DialplanError::at(
                        path,
                        text,
                        s.span(),
                        format!("ring_secs = {secs}: must be between 0 and 60"),
                    ));
                }
                Duration::from_secs_f64(secs)
            }
        };
        routes.push(Route {
            name,
            ring,
            file: path.to_path_buf(),
            number,
            caller,
            actions,
            hours,
        });
    }
    let mut queues = Vec::with_capacity(spec.queue.len());
    for queue in spec.queue {
        let span = queue.span();
        let mut queue_spec = queue.into_inner();
        let err = |m: String| DialplanError::at(path, text, span.clone(), m);
        if queue_spec.name.trim().is_empty() {
            return Err(err("queue name is empty".into()));
        }
        if let Some(music) = &queue_spec.hold_music {
            // Like prompts: relative to the dialplan file, and decoded now
            // so that a missing file is this line's error, not start-up's.
            let resolved = if music.is_absolute() {
                music.clone()
            } else {
                base.join(music)
            };
            load_prompt(&resolved).map_err(|m| {
                err(format!(
                    "queue {:?}: hold_music {:?}: {m}",
                    queue_spec.name,
                    music.display().to_string()
                ))
            })?;
            queue_spec.hold_music = Some(resolved);
        }
        queues.push(DialplanQueue {
            spec: queue_spec,
            file: path.to_path_buf(),
            line: line_col(text, span.start).0,
        });
    }
    Ok((routes, queues))
}

fn compile_actions(
    path: &Path,
    text: &str,
    base: &Path,
    specs: Spanned<Vec<Spanned<ActionSpec>>>,
    load_prompt: &mut dyn FnMut(&Path) -> Result<Samples, String>,
) -> Result<Vec<Action>, DialplanError> {
    let list_span = specs.span();
    let specs = specs.into_inner();
    if specs.is_empty() {
        return Err(DialplanError::at(
            path,
            text,
            list_span,
            "a route needs at least one action (play, record, pause, hangup, assistant, transfer)"
                .into(),
        ));
    }
    let mut actions = Vec::with_capacity(specs.len());
    for spec in specs {
        let span = spec.span();
        let err = |m: String| DialplanError::at(path, text, span.clone(), m);
        actions.push(match spec.into_inner() {
            ActionSpec::Play(file) => {
                let file_path = resolve(base, &file);
                let samples =
                    load_prompt(&file_path).map_err(|m| err(format!("prompt {file:?}: {m}")))?;
                Action::Play(Prompt {
                    path: file_path,
                    samples,
                })
            }
            ActionSpec::Record { max_secs } => {
                if max_secs == 0 || max_secs > 3600 {
                    return Err(err(format!(
                        "record max_secs = {max_secs}: must be between 1 and 3600"
                    )));
                }
                Action::Record {
                    max: Duration::from_secs(max_secs),
                }
            }
            ActionSpec::Pause { secs } => {
                if !(secs > 0.0 && secs <= 600.0) {
                    return Err(err(format!(
                        "pause secs = {secs}: must be between 0 and 600"
                    )));
                }
                Action::Pause(Duration::from_secs_f64(secs))
            }
            ActionSpec::Hangup {} => Action::Hangup,
            ActionSpec::Transfer(spec) => {
                let line = line_col(text, span.start).0;
                let unavailable = match &spec.unavailable {
                    Some(file) => {
                        let file_path = resolve(base, file);
                        let samples = load_prompt(&file_path).map_err(|m| {
                            err(format!("transfer unavailable prompt {file:?}: {m}"))
                        })?;
                        Some(Prompt {
                            path: file_path,
                            samples,
                        })
                    }
                    None => None,
                };
                Action::Transfer(compile_transfer(spec, unavailable, line).map_err(err)?)
            }
            ActionSpec::Assistant {
                silence_reprompt_secs,
                max_reprompts,
            } => {
                let secs = silence_reprompt_secs.unwrap_or(8.0);
                if !(2.0..=120.0).contains(&secs) {
                    return Err(err(format!(
                        "assistant silence_reprompt_secs = {secs}: must be between 2 and 120"
                    )));
                }
                Action::Assistant(AssistantOptions {
                    silence_reprompt: Duration::from_secs_f64(secs),
                    max_reprompts: max_reprompts.unwrap_or(2).min(10),
                })
            }
        });
    }
    Ok(actions)
}

/// A prompt path as written: absolute, or relative to its dialplan file.
fn resolve(base: &Path, file: &str) -> PathBuf {
    if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        base.join(file)
    }
}

/// The checks that need no configuration: which fields go together.
fn compile_transfer(
    spec: TransferSpec,
    unavailable: Option<Prompt>,
    line: usize,
) -> Result<TransferAction, String> {
    let named = |name: &Option<String>, field: &str| -> Result<(), String> {
        match name {
            Some(n) if n.trim().is_empty() => Err(format!("transfer {field} is empty")),
            _ => Ok(()),
        }
    };
    named(&spec.queue, "queue")?;
    named(&spec.agent, "agent")?;
    if spec.agent.is_some() && spec.uri.is_some() {
        return Err("transfer: give an agent or a uri, not both".into());
    }
    let refer_to = match (spec.uri, spec.mode.as_deref()) {
        (Some(uri), None | Some("blind")) => {
            if crate::sip::message::Uri::parse(&uri).map_or(true, |u| !u.is_sip()) {
                return Err(format!("transfer uri {uri:?} is not a sip: URI"));
            }
            Some(uri)
        }
        (Some(_), Some("bridged")) => {
            return Err(
                "transfer to a uri is blind (REFER); for a bridged call declare the address as a \
                 [[handoff.agent]] with uri = ... in config.toml and use transfer = { agent = ... }"
                    .into(),
            );
        }
        (Some(_), Some(other)) => {
            return Err(format!(
                "transfer mode {other:?}: only \"blind\" applies to a uri"
            ));
        }
        (None, Some(_)) => {
            return Err(
                "transfer mode applies to a uri; a queue's own transfer mode is set in \
                 config.toml ([[handoff.queue]] transfer = \"refer\")"
                    .into(),
            );
        }
        (None, None) => None,
    };
    Ok(TransferAction {
        queue: spec.queue,
        agent: spec.agent,
        refer_to,
        unavailable,
        line,
    })
}

/// A transfer against the configured agents and queues.
fn check_transfer(transfer: &TransferAction, handoff: &HandoffSection) -> Result<(), String> {
    let queues: Vec<&str> = handoff.queue.iter().map(|q| q.name.as_str()).collect();
    if queues.is_empty() {
        return Err(
            "transfer needs hand-off queues; config.toml [handoff] defines none and no dialplan file has a [[queue]]".into(),
        );
    }
    if let Some(queue) = &transfer.queue
        && !queues.contains(&queue.as_str())
    {
        return Err(format!(
            "transfer queue {queue:?} is neither a [[handoff.queue]] in config.toml nor a dialplan [[queue]] (queues: {})",
            queues.join(", ")
        ));
    }
    if let Some(agent) = &transfer.agent
        && !handoff.agent.iter().any(|a| a.id == *agent)
    {
        let agents: Vec<&str> = handoff.agent.iter().map(|a| a.id.as_str()).collect();
        return Err(format!(
            "transfer agent {agent:?} is not a [[handoff.agent]] in config.toml (agents: {})",
            if agents.is_empty() {
                "none".to_owned()
            } else {
                agents.join(", ")
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_prompt(_: &Path) -> Result<Samples, String> {
        Ok(Arc::from(vec![0i16; 160]))
    }

    fn load_str(text: &str) -> Result<Dialplan, DialplanError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.toml"), text).unwrap();
        Dialplan::load(dir.path(), &mut |p| {
            if p.to_string_lossy().contains("missing") {
                Err("file not found".into())
            } else {
                ok_prompt(p)
            }
        })
    }

    #[test]
    fn routes_by_number_then_caller_first_match_wins() {
        let plan = load_str(
            r#"
[[route]]
name = "vip"
match.number = "01332*"
match.caller = "07700900123"
actions = [{ hangup = {} }]

[[route]]
name = "derby"
match.number = "01332*"
actions = [{ play = "welcome.wav" }, { record = { max_secs = 5 } }, { pause = { secs = 0.5 } }, { hangup = {} }]

[[route]]
name = "default"
match.number = "*"
actions = [{ hangup = {} }]
"#,
        )
        .unwrap();
        assert_eq!(
            plan.route("01332 640000", "07700900123").unwrap().name,
            "vip"
        );
        assert_eq!(plan.route("01332640000", "0115").unwrap().name, "derby");
        assert_eq!(plan.route("999", "0115").unwrap().name, "default");
        let derby = plan.route("01332640000", "x").unwrap();
        assert_eq!(derby.actions.len(), 4);
        assert!(derby.records());
    }

    #[test]
    fn no_match_is_none() {
        let plan = load_str(
            "[[route]]\nname = \"a\"\nmatch.number = \"100\"\nactions = [{ hangup = {} }]\n",
        )
        .unwrap();
        assert!(plan.route("200", "x").is_none());
        assert!(plan.route("100", "x").is_some());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "[[route]]\nname = \"a\"\nactions = [{ hangup = {} }]\n\n[[route]]\nname = \"b\"\nactions = [{ dance = {} }]\n",
                7,
                "dance",
            ),
            (
                "[[route]]\nname = \"a\"\nmatch.number = \"12*34\"\nactions = [{ hangup = {} }]\n",
                3,
                "pattern",
            ),
            (
                "[[route]]\nname = \"a\"\nactions = [\n  { play = \"missing.wav\" },\n]\n",
                4,
                "missing.wav",
            ),
            (
                "[[route]]\nname = \"a\"\nactions = []\n",
                3,
                "at least one action",
            ),
            (
                "[[route]]\nname = \"a\"\nactions = [{ record = { max_secs = 0 } }]\n",
                3,
                "max_secs",
            ),
            ("[[route]\nname = \"a\"\n", 1, ""),
            (
                "[[route]]\nname = \"a\"\nactions = [{ hangup = {} }]\n[route.hours]\nopen = [\"someday 9-5\"]\nclosed_actions = [{ hangup = {} }]\n",
                5,
                "someday",
            ),
        ];
        for (text, line, needle) in cases {
            let err = load_str(text).unwrap_err();
            match &err {
                DialplanError::At {
                    line: l, message, ..
                } => {
                    assert_eq!(*l, line, "{err} for {text:?}");
                    assert!(message.contains(needle), "{err}");
                }
                other => panic!("expected a line, got {other}"),
            }
            assert!(err.to_string().contains("main.toml:"), "{err}");
        }
    }

    #[test]
    fn duplicate_names_and_empty_dirs_are_errors() {
        let err = load_str("[[route]]\nname = \"a\"\nactions = [{ hangup = {} }]\n[[route]]\nname = \"a\"\nactions = [{ hangup = {} }]\n").unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(Dialplan::load(dir.path(), &mut ok_prompt).is_err());
    }

    #[test]
    fn opening_hours_pick_the_closed_actions() {
        let plan = load_str(
            "[[route]]\nname = \"a\"\nactions = [{ record = { max_secs = 5 } }]\n[route.hours]\nopen = [\"mon-fri 08:30-17:00\"]\nclosed_actions = [{ hangup = {} }]\n",
        )
        .unwrap();
        let route = &plan.routes[0];
        let monday_noon = chrono::NaiveDate::from_ymd_opt(2026, 11, 23)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let sunday_noon = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert!(matches!(
            route.actions_at(monday_noon)[0],
            Action::Record { .. }
        ));
        assert!(matches!(route.actions_at(sunday_noon)[0], Action::Hangup));
    }

    fn handoff(text: &str) -> HandoffSection {
        toml::from_str(text).unwrap()
    }

    const HANDOFF: &str = "default_queue = 'general'\n[[agent]]\nid = 'agent1'\npassword = 'pw'\n\
                           [[queue]]\nname = 'general'\nmembers = ['agent1']\n";

    #[test]
    fn transfer_actions_compile_and_check_against_the_configuration() {
        let plan = load_str(
            r#"
[[route]]
name = "zero"
match.number = "0"
actions = [
  { transfer = { queue = "general", unavailable = "sorry.wav" } },
  { transfer = { agent = "agent1" } },
  { transfer = { uri = "sip:2000@192.0.2.40", mode = "blind" } },
  { record = { max_secs = 30 } },
]
"#,
        )
        .unwrap();
        let route = &plan.routes[0];
        assert!(route.records(), "the caller's side with the agent is kept");
        let Action::Transfer(queue) = &route.actions[0] else {
            panic!("a transfer");
        };
        assert_eq!(queue.queue.as_deref(), Some("general"));
        assert!(queue.unavailable.is_some());
        assert_eq!(queue.line, 6);
        let Action::Transfer(blind) = &route.actions[2] else {
            panic!("a transfer");
        };
        assert_eq!(blind.refer_to.as_deref(), Some("sip:2000@192.0.2.40"));
        plan.check_handoff(&handoff(HANDOFF)).unwrap();
        // Not configured at all: every transfer is an error with its line.
        let err = plan.check_handoff(&HandoffSection::default()).unwrap_err();
        assert!(err.to_string().contains("main.toml:6:"), "{err}");
        assert!(err.to_string().contains("defines none"), "{err}");
    }

    #[test]
    fn unknown_queues_and_agents_name_the_line() {
        let cases = [
            (
                "{ transfer = { queue = \"billing\" } }",
                "queue \"billing\"",
            ),
            ("{ transfer = { agent = \"agent9\" } }", "agent \"agent9\""),
        ];
        for (action, needle) in cases {
            let text = format!(
                "[[route]]\nname = \"a\"\nactions = [{{ hangup = {{}} }}]\n[route.hours]\nopen = [\"mon 09:00-10:00\"]\nclosed_actions = [\n  {action},\n]\n"
            );
            let plan = load_str(&text).unwrap();
            let err = plan.check_handoff(&handoff(HANDOFF)).unwrap_err();
            match &err {
                DialplanError::At { line, message, .. } => {
                    assert_eq!(*line, 7, "{err}");
                    assert!(message.contains(needle), "{err}");
                    assert!(message.contains("config.toml"), "{err}");
                }
                other => panic!("expected a line, got {other}"),
            }
        }
    }

    #[test]
    fn inconsistent_transfers_are_syntax_errors() {
        let cases = [
            (
                "{ transfer = { agent = \"a\", uri = \"sip:1@192.0.2.1\" } }",
                "not both",
            ),
            ("{ transfer = { uri = \"http://x\" } }", "not a sip: URI"),
            (
                "{ transfer = { uri = \"sip:1@192.0.2.1\", mode = \"bridged\" } }",
                "[[handoff.agent]]",
            ),
            (
                "{ transfer = { queue = \"general\", mode = \"blind\" } }",
                "applies to a uri",
            ),
            ("{ transfer = { queue = \"\" } }", "empty"),
            (
                "{ transfer = { queue = \"general\", unavailable = \"missing.wav\" } }",
                "missing.wav",
            ),
            (
                "{ transfer = { queue = \"general\", priority = 1 } }",
                "priority",
            ),
        ];
        for (action, needle) in cases {
            let text = format!("[[route]]\nname = \"a\"\nactions = [\n  {action},\n]\n");
            let err = load_str(&text).unwrap_err();
            match &err {
                DialplanError::At { line, message, .. } => {
                    assert_eq!(*line, 4, "{err}");
                    assert!(message.contains(needle), "{err}");
                }
                other => panic!("expected a line, got {other}"),
            }
        }
    }

    /// Several files in one dialplan directory, loaded like `load_str`.
    fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Dialplan, DialplanError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let plan = Dialplan::load(dir.path(), &mut |p| {
            if p.to_string_lossy().contains("missing") {
                Err("file not found".into())
            } else {
                ok_prompt(p)
            }
        });
        (dir, plan)
    }

    const ROUTE_TO_BILLING: &str =
        "[[route]]\nname = \"main\"\nactions = [{ transfer = { queue = \"billing\" } }]\n";

    #[test]
    fn dialplan_queues_parse_and_merge_into_the_configured_handoff() {
        let (dir, plan) = load_files(&[
            ("main.toml", ROUTE_TO_BILLING),
            (
                "queues.toml",
                "# billing team\n\n[[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\n\
                 strategy = \"ring_all\"\nring_timeout_secs = 20\nmax_wait_secs = 120\n\
                 overflow = \"general\"\nhours = [\"mon-fri 09:00-17:00\"]\n\
                 closed_message = \"Billing is closed.\"\nhold_music = \"music/hold.wav\"\n",
            ),
        ]);
        let plan = plan.unwrap();
        assert_eq!(plan.queues.len(), 1);
        let queue = &plan.queues[0];
        assert_eq!(queue.line, 3, "the [[queue]] header's line");
        assert!(queue.file.ends_with("queues.toml"));
        assert_eq!(queue.spec.strategy, crate::handoff::RingStrategy::RingAll);
        assert_eq!(queue.spec.max_wait_secs, Some(120));
        assert_eq!(queue.spec.overflow.as_deref(), Some("general"));
        // Hold music is relative to the dialplan file, like prompts.
        assert_eq!(
            queue.spec.hold_music.as_deref(),
            Some(dir.path().join("music/hold.wav").as_path())
        );

        // Without the queue the transfer is refused; merged it is accepted,
        // after config.toml's own queues.
        assert!(plan.check_handoff(&handoff(HANDOFF)).is_err());
        let merged = plan.handoff_with_queues(&handoff(HANDOFF)).unwrap();
        let names: Vec<&str> = merged.queue.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["general", "billing"]);
        merged.validate().unwrap();
        plan.check_handoff(&merged).unwrap();
    }

    #[test]
    fn config_toml_may_name_a_queue_a_dialplan_defines_but_not_one_nobody_defines() {
        // config.toml with no queues of its own: the default queue and an
        // overflow live in the dialplan.
        let config = "default_queue = 'billing'\n[[agent]]\nid = 'agent1'\npassword = 'pw'\n";
        let section = handoff(config);
        section.validate_without_dialplan_queues().unwrap();
        assert!(section.validate().is_err(), "alone it names nothing");
        let (_dir, plan) = load_files(&[(
            "main.toml",
            "[[route]]\nname = \"main\"\nactions = [{ transfer = {} }]\n\n\
             [[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\n",
        )]);
        let merged = plan.unwrap().handoff_with_queues(&section).unwrap();
        assert_eq!(merged.default_queue.as_deref(), Some("billing"));

        let nobody =
            handoff("default_queue = 'nowhere'\n[[agent]]\nid = 'agent1'\npassword = 'pw'\n");
        nobody.validate_without_dialplan_queues().unwrap();
        let (_dir, plan) = load_files(&[("main.toml", ROUTE_TO_BILLING)]);
        let err = plan.unwrap().handoff_with_queues(&nobody).unwrap_err();
        assert!(err.to_string().contains("\"nowhere\""), "{err}");
        assert!(err.to_string().contains("config [handoff]"), "{err}");
    }

    #[test]
    fn a_missing_hold_music_file_names_the_queue_line() {
        let (_dir, plan) = load_files(&[(
            "main.toml",
            "[[route]]\nname = \"main\"\nactions = [{ hangup = {} }]\n\n\
             [[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\nhold_music = \"missing.wav\"\n",
        )]);
        let err = plan.unwrap_err();
        assert!(err.to_string().contains("main.toml:5:"), "{err}");
        assert!(err.to_string().contains("missing.wav"), "{err}");
    }

    #[test]
    fn a_queue_defined_twice_is_refused_with_both_places() {
        let queue = "[[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\n";
        // Two dialplan files: the later one (by name) is the error.
        let (_dir, plan) = load_files(&[
            ("a.toml", &format!("{ROUTE_TO_BILLING}{queue}")),
            ("b.toml", &format!("\n{queue}")),
        ]);
        let err = plan.unwrap_err().to_string();
        assert!(
            err.contains("b.toml:2: queue \"billing\" is already defined in "),
            "{err}"
        );
        assert!(err.contains("a.toml:4"), "{err}");

        // A dialplan file and config.toml.
        let (_dir, plan) = load_files(&[(
            "main.toml",
            &format!("{ROUTE_TO_BILLING}[[queue]]\nname = \"general\"\nmembers = [\"agent1\"]\n"),
        )]);
        let err = plan
            .unwrap()
            .handoff_with_queues(&handoff(HANDOFF))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("main.toml:4: queue \"general\" is already defined in config.toml"),
            "{err}"
        );
    }

    #[test]
    fn dialplan_queue_members_must_be_configured_agents() {
        let (_dir, plan) = load_files(&[(
            "main.toml",
            &format!(
                "{ROUTE_TO_BILLING}[[queue]]\nname = \"billing\"\nmembers = [\"agent1\", \"bob\"]\n"
            ),
        )]);
        let plan = plan.unwrap();
        let err = plan
            .handoff_with_queues(&handoff(HANDOFF))
            .unwrap_err()
            .to_string();
        assert!(err.contains("main.toml:4:"), "{err}");
        assert!(
            err.contains("member \"bob\" is not a [[handoff.agent]]"),
            "{err}"
        );

        // The rest of the hand-off's checks apply too, at the same line:
        // an overflow naming no queue anywhere.
        let (_dir, plan) = load_files(&[(
            "main.toml",
            &format!(
                "{ROUTE_TO_BILLING}[[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\noverflow = \"nowhere\"\n"
            ),
        )]);
        let err = plan
            .unwrap()
            .handoff_with_queues(&handoff(HANDOFF))
            .unwrap_err()
            .to_string();
        assert!(err.contains("main.toml:4:"), "{err}");
        assert!(err.contains("overflow \"nowhere\""), "{err}");
    }

    #[test]
    fn dialplan_queues_take_exactly_the_handoff_queue_fields() {
        let (_dir, plan) = load_files(&[(
            "main.toml",
            &format!(
                "{ROUTE_TO_BILLING}[[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\npassword = \"x\"\n"
            ),
        )]);
        let err = plan.unwrap_err().to_string();
        assert!(err.contains("main.toml:"), "{err}");
        assert!(err.contains("password"), "{err}");
        let (_dir, plan) = load_files(&[(
            "main.toml",
            &format!("{ROUTE_TO_BILLING}[[queue]]\nname = \" \"\nmembers = []\n"),
        )]);
        assert!(
            plan.unwrap_err()
                .to_string()
                .contains("main.toml:4: queue name is empty")
        );
    }

    #[test]
    fn shipped_dialplans_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans");
        let plan = Dialplan::load(&dir, &mut |p| {
            if p.exists() {
                ok_prompt(p)
            } else {
                Err(format!("{} missing", p.display()))
            }
        })
        .unwrap();
        assert!(plan.route("01332640000", "07700900000").is_some());
    }
}
