//! Supervisor control of live calls: the registry through which the
//! dashboard reaches a call's task (hang up, take over) and taps its audio
//! (listen in).
//!
//! A call task registers when it answers ([`LiveCalls::register`]) and keeps
//! the returned [`LiveCall`]; dropping its [`Registration`] removes the call,
//! however the task ends. Commands are checked against the call's
//! [`CallPhase`] before they are queued, so the dashboard can answer 409 at
//! once instead of a command being silently ignored later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::RwLock;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

/// Where a supervisor sends a call they take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOverTarget {
    /// A hand-off agent id (the supervisor's own phone for "to me").
    Agent(String),
    /// A hand-off queue name.
    Queue(String),
}

/// What a person can make a live call do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorCommand {
    /// Hang the call up; `by` is the dashboard user.
    Hangup { by: String },
    /// Stop the assistant and transfer the caller.
    TakeOver { by: String, target: TakeOverTarget },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no such live call")]
    NotFound,
    #[error("the call is busy; try again")]
    Busy,
    #[error("the call cannot do that now: {0}")]
    NotNow(String),
}

/// 20 ms of a live call for listen-in: 160 caller samples then 160 samples
/// of the other side (Frontdoor or the agent), 8 kHz, signed 16-bit.
pub type ListenFrame = Arc<[i16]>;

/// Commands waiting for a call's task. A person clicks a button; more than a
/// few queued means the task is stuck, and the dashboard should say so.
const COMMAND_CAPACITY: usize = 4;
/// Listen frames buffered per listener (one second): a listener further
/// behind loses the oldest audio instead of slowing the call down.
const LISTEN_CAPACITY: usize = 50;

/// Where a live call is, as far as supervisor commands care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CallPhase {
    /// The dialplan's actions (assistant, prompts, recording) are running:
    /// every command is accepted.
    Dialplan = 0,
    /// Queued for an agent or ringing one (the AI's hand-off or an earlier
    /// take-over): a take-over re-targets the caller.
    Waiting = 1,
    /// Bridged to an agent: a take-over is refused (the caller is with a
    /// person already); hang-up works and ends both legs.
    WithAgent = 2,
    /// The call is being hung up: nothing more to do.
    Ending = 3,
}

impl CallPhase {
    fn from_u8(value: u8) -> CallPhase {
        match value {
            0 => CallPhase::Dialplan,
            1 => CallPhase::Waiting,
            2 => CallPhase::WithAgent,
            _ => CallPhase::Ending,
        }
    }
}

/// The call task's view of its phase; cheap to clone and to set.
#[derive(Debug, Clone)]
pub struct PhaseHandle(Arc<AtomicU8>);

impl PhaseHandle {
    pub fn set(&self, phase: CallPhase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    pub fn get(&self) -> CallPhase {
        CallPhase::from_u8(self.0.load(Ordering::Acquire))
    }
}

struct Entry {
    commands: mpsc::Sender<SupervisorCommand>,
    listen: broadcast::Sender<ListenFrame>,
    phase: PhaseHandle,
    /// Tells this registration apart from a later one under the same id,
    /// so a stale guard never removes its successor.
    generation: u64,
}

#[derive(Default)]
struct Registry {
    calls: RwLock<HashMap<String, Entry>>,
    next_generation: AtomicU64,
}

/// The live calls on this node that a supervisor can act on.
#[derive(Clone, Default)]
pub struct LiveCalls {
    inner: Arc<Registry>,
}

/// What a call task keeps once registered.
pub struct LiveCall {
    /// Commands for this call, already checked against its phase.
    pub commands: mpsc::Receiver<SupervisorCommand>,
    /// Where the media stream publishes listen frames (it checks for
    /// listeners before building one).
    pub listen: broadcast::Sender<ListenFrame>,
    /// The call task updates this as the call moves on.
    pub phase: PhaseHandle,
    /// Keeps the call listed; dropping it removes the call.
    pub registration: Registration,
}

/// Removes its call from [`LiveCalls`] when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    call_id: String,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.registry.calls.write();
        if calls
            .get(&self.call_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            calls.remove(&self.call_id);
        }
    }
}

impl LiveCalls {
    pub fn new() -> LiveCalls {
        LiveCalls::default()
    }

    /// Lists `call_id` as live, in [`CallPhase::Dialplan`]. Registering an
    /// id again replaces the earlier entry (ids are UUIDs, so only a test
    /// would); the earlier guard then leaves the new entry alone.
    pub fn register(&self, call_id: &str) -> LiveCall {
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let (listen, _) = broadcast::channel(LISTEN_CAPACITY);
        let phase = PhaseHandle(Arc::new(AtomicU8::new(CallPhase::Dialplan as u8)));
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        self.inner.calls.write().insert(
            call_id.to_owned(),
            Entry {
                commands: commands_tx,
                listen: listen.clone(),
                phase: phase.clone(),
                generation,
            },
        );
        LiveCall {
            commands,
            listen,
            phase,
            registration: Registration {
                registry: self.inner.clone(),
                call_id: call_id.to_owned(),
                generation,
            },
        }
    }

    /// Sends `cmd` to the call's task. `NotNow` when the call's phase rules
    /// the command out (a take-over of a call already with an agent;
    /// anything while the call is ending), `Busy` when the task has not yet
    /// taken earlier commands.
    pub fn command(&self, call_id: &str, cmd: SupervisorCommand) -> Result<(), ControlError> {
        let calls = self.inner.calls.read();
        let entry = calls.get(call_id).ok_or(ControlError::NotFound)?;
        match (entry.phase.get(), &cmd) {
            (CallPhase::Ending, _) => {
                return Err(ControlError::NotNow("the call is ending".into()));
            }
            (CallPhase::WithAgent, SupervisorCommand::TakeOver { .. }) => {
                return Err(ControlError::NotNow(
                    "the caller is already talking with an agent".into(),
                ));
            }
            _ => {}
        }
        entry.commands.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Busy,
            // The task has finished and its guard is about to go.
            mpsc::error::TrySendError::Closed(_) => ControlError::NotFound,
        })
    }

    /// Subscribes to the call's audio; `None` when the call is not live here.
    pub fn listen(&self, call_id: &str) -> Option<broadcast::Receiver<ListenFrame>> {
        self.inner
            .calls
            .read()
            .get(call_id)
            .map(|e| e.listen.subscribe())
    }

    /// The call's phase; `None` when it is not live here.
    pub fn phase(&self, call_id: &str) -> Option<CallPhase> {
        self.inner.calls.read().get(call_id).map(|e| e.phase.get())
    }

    /// Ids of the live calls on this node.
    pub fn ids(&self) -> Vec<String> {
        self.inner.calls.read().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hangup() -> SupervisorCommand {
        SupervisorCommand::Hangup { by: "sam".into() }
    }

    fn take_over() -> SupervisorCommand {
        SupervisorCommand::TakeOver {
            by: "sam".into(),
            target: TakeOverTarget::Queue("general".into()),
        }
    }

    #[test]
    fn registration_lists_the_call_until_dropped() {
        let live = LiveCalls::new();
        let call = live.register("c1");
        assert_eq!(live.ids(), vec!["c1".to_string()]);
        assert_eq!(live.phase("c1"), Some(CallPhase::Dialplan));
        assert!(live.listen("c1").is_some());
        drop(call);
        assert!(live.ids().is_empty());
        assert!(live.listen("c1").is_none());
        assert_eq!(live.command("c1", hangup()), Err(ControlError::NotFound));
    }

    #[test]
    fn a_stale_guard_leaves_a_newer_registration_alone() {
        let live = LiveCalls::new();
        let first = live.register("c1");
        let second = live.register("c1");
        drop(first);
        assert_eq!(live.ids(), vec!["c1".to_string()]);
        drop(second);
        assert!(live.ids().is_empty());
    }

    #[test]
    fn commands_reach_only_their_call() {
        let live = LiveCalls::new();
        let mut one = live.register("one");
        let mut two = live.register("two");
        live.command("two", take_over()).expect("queued");
        live.command("one", hangup()).expect("queued");
        assert_eq!(one.commands.try_recv().ok(), Some(hangup()));
        assert_eq!(two.commands.try_recv().ok(), Some(take_over()));
        assert!(one.commands.try_recv().is_err());
        assert_eq!(live.command("three", hangup()), Err(ControlError::NotFound));
    }

    #[test]
    fn a_full_queue_is_busy_and_a_finished_task_is_not_found() {
        let live = LiveCalls::new();
        let call = live.register("c1");
        for _ in 0..COMMAND_CAPACITY {
            live.command("c1", hangup()).expect("room");
        }
        assert_eq!(live.command("c1", hangup()), Err(ControlError::Busy));
        // The task ended (receiver gone) but its guard has not run yet.
        let LiveCall {
            commands,
            registration,
            ..
        } = call;
        drop(commands);
        assert_eq!(live.command("c1", hangup()), Err(ControlError::NotFound));
        drop(registration);
    }

    #[test]
    fn the_phase_rules_out_commands_that_cannot_apply() {
        let live = LiveCalls::new();
        let mut call = live.register("c1");
        call.phase.set(CallPhase::Waiting);
        live.command("c1", take_over())
            .expect("a queued caller can be re-targeted");
        assert_eq!(call.commands.try_recv().ok(), Some(take_over()));
        call.phase.set(CallPhase::WithAgent);
        assert!(matches!(
            live.command("c1", take_over()),
            Err(ControlError::NotNow(_))
        ));
        // Hanging up a bridged call is always possible.
        live.command("c1", hangup())
            .expect("hang-up while with an agent");
        call.phase.set(CallPhase::Ending);
        assert!(matches!(
            live.command("c1", hangup()),
            Err(ControlError::NotNow(_))
        ));
        assert_eq!(live.phase("c1"), Some(CallPhase::Ending));
        assert_eq!(call.commands.try_recv().ok(), Some(hangup()));
        assert!(call.commands.try_recv().is_err());
    }

    #[tokio::test]
    async fn listeners_get_what_the_call_publishes() {
        let live = LiveCalls::new();
        let call = live.register("c1");
        assert_eq!(call.listen.receiver_count(), 0);
        let mut ear = live.listen("c1").expect("live");
        assert_eq!(call.listen.receiver_count(), 1);
        let frame: ListenFrame = Arc::from(vec![7i16; 320]);
        call.listen.send(frame.clone()).expect("one listener");
        assert_eq!(ear.recv().await.expect("frame"), frame);
        drop(call);
        assert!(matches!(
            ear.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}
