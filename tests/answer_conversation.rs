//! Multi-turn behaviour of the conversation state machine.

use std::path::PathBuf;

use frontdoor::answer::{Action, AnswerEngine, Escalation, TransferReason, TurnFlag};

fn engine() -> AnswerEngine {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    AnswerEngine::load(
        &root.join("knowledge"),
        &root.join("governance/safeguarding.toml"),
    )
    .expect("the shipped knowledge and governance files load")
}

#[test]
fn missed_bin_with_correction_ends_with_a_reference() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(42);
    let turn = call.respond(&engine, "um my bin wasn't emptied this week");
    assert_eq!(turn.intent.as_deref(), Some("bin_missed"));
    assert!(turn.flags.contains(&TurnFlag::FlowStarted));

    let turn = call.respond(&engine, "twenty ashbourne road");
    assert_eq!(turn.action, Action::Continue);
    let turn = call.respond(&engine, "the blue one");
    assert!(turn.reply.contains("20 Ashbourne Road"), "{}", turn.reply);
    assert!(turn.reply.contains("recycling"), "{}", turn.reply);

    let turn = call.respond(&engine, "no, number twelve not twenty");
    assert!(turn.flags.contains(&TurnFlag::Correction));
    assert!(turn.reply.contains("12 Ashbourne Road"), "{}", turn.reply);

    let turn = call.respond(&engine, "yes that's right");
    let Action::RequestCompleted {
        reference,
        kind,
        slots,
    } = &turn.action
    else {
        panic!("expected a completed request, got {:?}", turn.action);
    };
    assert_eq!(kind, "missed_bin_report");
    assert_eq!(
        slots.get("address").map(String::as_str),
        Some("12 Ashbourne Road")
    );
    assert_eq!(slots.get("bin_type").map(String::as_str), Some("recycling"));
    assert!(reference.starts_with("FD-") && reference.len() == 9);
    assert_eq!(call.completed_requests().len(), 1);

    // Same seed, same reference: references are reproducible in tests.
    let mut replay = engine.new_conversation_seeded(42);
    for text in [
        "my bin wasnt emptied",
        "20 ashbourne road",
        "recycling",
        "yes",
    ] {
        let turn = replay.respond(&engine, text);
        if let Action::RequestCompleted {
            reference: again, ..
        } = &turn.action
        {
            assert_eq!(again, reference);
        }
    }
}

#[test]
fn details_in_the_first_sentence_are_not_asked_again() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(1);
    let turn = call.respond(
        &engine,
        "the bin men skipped number twelve on ashbourne road",
    );
    assert!(
        turn.reply.to_lowercase().contains("which bin"),
        "{}",
        turn.reply
    );
}

#[test]
fn bulky_collection_and_council_tax_flows_complete() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(2);
    call.respond(&engine, "can you collect an old sofa");
    let turn = call.respond(&engine, "5 mill lane");
    assert!(
        turn.reply.contains("sofa") && turn.reply.contains("5 Mill Lane"),
        "{}",
        turn.reply
    );
    let turn = call.respond(&engine, "yes");
    assert!(
        matches!(turn.action, Action::RequestCompleted { ref kind, .. } if kind == "bulky_waste_collection")
    );

    let mut call = engine.new_conversation_seeded(3);
    call.respond(&engine, "i want to pay my council tax");
    let turn = call.respond(&engine, "one two three four five six seven eight");
    assert!(turn.reply.contains("12345678"), "{}", turn.reply);
    let turn = call.respond(&engine, "yes");
    assert!(matches!(turn.action, Action::RequestCompleted { .. }));
}

#[test]
fn my_road_is_not_taken_for_a_street_name() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(11);
    let turn = call.respond(&engine, "i want to report a pothole on my road");
    assert!(
        !turn.reply.to_lowercase().contains("my road"),
        "read back 'my road' as a place: {}",
        turn.reply
    );
    assert!(
        turn.reply.contains('?'),
        "no question asked: {}",
        turn.reply
    );
    let turn = call.respond(&engine, "its on ashbourne road by the school");
    assert!(
        turn.reply.contains("pothole, Ashbourne Road"),
        "{}",
        turn.reply
    );
}

#[test]
fn start_again_clears_the_request() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(4);
    call.respond(&engine, "there's a pothole");
    let turn = call.respond(&engine, "actually can we start again");
    assert!(turn.flags.contains(&TurnFlag::StartAgain));
    let turn = call.respond(&engine, "what day is my bin collected");
    assert_eq!(turn.intent.as_deref(), Some("bin_day"));
}

#[test]
fn repeated_misunderstanding_hands_over_as_complexity() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(5);
    let first = call.respond(&engine, "flibber jabber wock");
    assert!(first.flags.contains(&TurnFlag::Clarifying));
    call.respond(&engine, "zorp blatt");
    let turn = call.respond(&engine, "quux frob");
    assert_eq!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::Complexity,
            priority: frontdoor::answer::Priority::Normal
        }
    );
    assert!(turn.reason.starts_with("complexity"), "{}", turn.reason);
}

#[test]
fn frustration_hands_over_as_complexity() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(6);
    let turn = call.respond(&engine, "you're not listening to me");
    assert!(matches!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::Complexity,
            ..
        }
    ));
    assert!(turn.flags.contains(&TurnFlag::Frustration));
}

#[test]
fn caller_repeating_themselves_hands_over() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(7);
    let text = "i need to know about the thing with my account";
    call.respond(&engine, text);
    call.respond(&engine, text);
    let turn = call.respond(&engine, text);
    assert!(
        matches!(
            turn.action,
            Action::Transfer {
                reason: TransferReason::Complexity,
                ..
            }
        ),
        "{:?}",
        turn
    );
}

#[test]
fn human_request_is_offered_help_once_then_transferred() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(8);
    let turn = call.respond(&engine, "can i speak to someone please");
    assert_eq!(turn.action, Action::Continue);
    assert!(turn.flags.contains(&TurnFlag::HumanOffered));
    assert_eq!(turn.escalation, Escalation::HumanRequest);
    let turn = call.respond(&engine, "no, i want to speak to someone");
    assert!(matches!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::HumanRequest,
            ..
        }
    ));
}

#[test]
fn insistent_human_request_goes_straight_through() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(9);
    let turn = call.respond(
        &engine,
        "i don't want to talk to a machine put me through to a real person",
    );
    assert!(matches!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::HumanRequest,
            ..
        }
    ));
}

#[test]
fn distress_mid_flow_transfers_at_once_with_safety_message() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(10);
    call.respond(&engine, "my bin was missed");
    let turn = call.respond(&engine, "honestly i can't go on like this anymore");
    assert_eq!(turn.escalation, Escalation::Distress);
    assert!(matches!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::Distress,
            ..
        }
    ));
    assert!(turn.reply.contains("116 123"), "{}", turn.reply);
    assert!(call.agent_unavailable(&engine).contains("999"));
    assert!(call.is_finished());
}

/// With no agents on the route the transfer cannot happen: the caller is
/// not hung up on, and what they say next is answered; a second risk is
/// still transferred with its safety message.
#[test]
fn a_transfer_that_cannot_happen_leaves_the_conversation_open() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(11);
    let turn = call.respond(&engine, "i can't go on like this anymore");
    assert!(matches!(turn.action, Action::Transfer { .. }));
    assert!(call.is_finished());
    call.transfer_unavailable();
    assert!(!call.is_finished());
    let next = call.respond(&engine, "when is my bin collection day");
    assert_eq!(next.intent.as_deref(), Some("bin_day"), "{next:?}");
    assert!(!matches!(next.action, Action::Hangup), "{next:?}");
    let again = call.respond(&engine, "i want to end it all");
    assert_eq!(again.escalation, Escalation::Distress);
    assert!(matches!(again.action, Action::Transfer { .. }));
    // Only a transfer reopens a conversation: a goodbye stays a goodbye.
    let mut done = engine.new_conversation_seeded(12);
    done.respond(&engine, "when is my bin day");
    done.respond(&engine, "no thanks bye");
    assert!(done.is_finished(), "the caller said goodbye");
    done.transfer_unavailable();
    assert!(done.is_finished());
}

#[test]
fn emergency_tells_caller_to_ring_999() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(11);
    let turn = call.respond(&engine, "i can smell gas in the kitchen");
    assert!(matches!(
        turn.action,
        Action::Transfer {
            reason: TransferReason::Emergency,
            ..
        }
    ));
    assert!(turn.reply.contains("999"));
    assert!(turn.reason.contains("emergency.gas"), "{}", turn.reason);
}

#[test]
fn figurative_wording_is_answered_not_escalated() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(12);
    let turn = call.respond(&engine, "this is killing me, how do i pay my council tax");
    assert_eq!(turn.escalation, Escalation::None);
    assert!(!matches!(turn.action, Action::Transfer { .. }));
}

#[test]
fn answer_offers_detail_then_goodbye() {
    let engine = engine();
    let mut call = engine.new_conversation_seeded(13);
    let turn = call.respond(&engine, "what time does the library open on saturday");
    assert_eq!(turn.intent.as_deref(), Some("library"));
    assert!(turn.reply.contains("more detail"));
    let turn = call.respond(&engine, "yes please");
    assert!(turn.reply.contains("anything else"));
    let turn = call.respond(&engine, "no thanks bye");
    assert_eq!(turn.action, Action::Hangup);
}
