//! Many instances on a Redis Cluster (three masters, three replicas), as Memorystore
//! for Valkey with cluster mode enabled and Memorystore for Redis Cluster are, with
//! `STATE_URL` naming one node: the bridge finds the cluster by itself. A message is
//! asked once, a conversation keeps its order, owed replies outlive the instance that
//! owed them (killed, or stopped with SIGTERM), hand-overs, menus and limits hold
//! across instances, conversations spread over every shard, and a master that fails
//! costs no reply, and doubles none.

use crate::helpers::*;
use crate::shared_state::{
    asked, instances_on, says, turns_finished, user, user_phone, webhook, Instance,
};
use stand_ins::chat::PhoneReply;
use std::time::{Duration, Instant};

/// A cluster, the emulators, and two instances on the cluster.
struct OnCluster {
    redis: RedisCluster,
    instances: Vec<Instance>,
    local: Local,
}

/// Two instances with `REPLY_MODE=reply_mode` and `settings` on a new cluster, told
/// only the address of a master that does not hold the test phone's conversation.
async fn on_cluster(reply_mode: &str, settings: &[(&str, &str)]) -> OnCluster {
    let redis = RedisCluster::start().await;
    let url = redis.url_not_holding(&stored_message_key("SM")).await;
    let (local, instances) = instances_on(&url, reply_mode, settings).await;
    OnCluster {
        redis,
        instances,
        local,
    }
}

/// User `n`'s conversation, as the bridge names it (its keys' hash tag).
fn session_of(n: usize) -> bridge::session::SessionId {
    bridge::session::SessionId::for_conversation(
        &bridge::session::SessionKey::derived_from_auth_token(AUTH_TOKEN),
        ACCOUNT_SID,
        &user(n),
        OUR_NUMBER,
    )
}

#[tokio::test]
async fn a_message_delivered_to_two_instances_is_asked_once() {
    let on = on_cluster("twiml", &[]).await;
    let [a, b] = &on.instances[..] else { panic!() };
    // At the same time: the second waits for the first delivery's answer.
    let message = says("a bit slow", &sid("SM", 0xc1_0001));
    let (first, second) = tokio::join!(webhook(a, &message), webhook(b, &message));
    assert_eq!(texts(&first), vec!["Slowly but surely"]);
    assert_eq!(first, second);
    // One after the other: the first delivery's answer, again.
    let message = says("hi", &sid("SM", 0xc1_0002));
    let first = webhook(a, &message).await;
    let again = webhook(b, &message).await;
    assert_eq!(texts(&first), vec!["Hello from the agent"]);
    assert_eq!(first, again);
    assert_eq!(asked(&on.local.emulator), vec!["a bit slow", "hi"]);
    // `check` says what it found.
    let (code, out) = output_of(on.local.dir.command(&["check"], &[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cluster (3 masters, 3 replicas)"), "{out}");
}

#[tokio::test]
async fn a_conversation_keeps_its_order_across_instances() {
    let on = on_cluster("api", &[]).await;
    let [a, b] = &on.instances[..] else { panic!() };
    // The first answer is slow; the second message reaches the other instance while
    // the agent has the first.
    webhook(a, &says("a bit slow", &sid("SM", 0xc2_0001))).await;
    agent_asked(&on.local.emulator, 1).await;
    webhook(b, &says("hi", &sid("SM", 0xc2_0002))).await;
    let sent = on.local.twilio.wait_for(2).await;
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Slowly but surely", "Hello from the agent"]);
    assert_eq!(asked(&on.local.emulator), vec!["a bit slow", "hi"]);
}

#[tokio::test]
async fn an_instance_killed_with_replies_owed_leaves_them_to_the_other() {
    let mut on = on_cluster("api", &[("STATE_LEASE", "2s")]).await;
    let a = &on.instances[0];
    // Owed by the first instance: a slow answer, and a quick one queued behind it.
    webhook(a, &says("slow", &sid("SM", 0xc3_0001))).await;
    webhook(a, &says("hi", &sid("SM", 0xc3_0002))).await;
    agent_asked(&on.local.emulator, 1).await;
    // No SIGTERM, no drain: what Cloud Run does to an instance out of memory.
    let killed = Instant::now();
    drop(on.instances.remove(0));
    let sent = on.local.twilio.wait_for(2).await;
    let took = killed.elapsed();
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Finally", "Hello from the agent"]);
    // The lease (2 s) runs out, the other instance asks the slow agent again (3 s).
    assert!(took < Duration::from_secs(9), "delivered after {took:?}");
    let b = &mut on.instances[0];
    b.serve
        .find_line(|line| {
            line.contains("took over the turn of an instance that died")
                .then_some(())
        })
        .await;
    turns_finished(&on.redis).await;
    // Exactly once: nothing more follows (no turn is left to take over).
    quiet_window(Duration::from_millis(500)).await;
    assert_eq!(on.local.twilio.sent().len(), 2);
}

/// One cluster for the scenarios of the human side, each under a prefix of its own (run
/// on a single server in `handoff` and `rich`): a hand-over started through one
/// instance is answered and ended through the other, a quiet hand-over is ended once
/// with both sweeping, and a numbered menu sent by one is answered at the other.
#[tokio::test]
async fn hand_overs_and_menus_hold_across_instances() {
    let redis = RedisCluster::start().await;
    crate::handoff::expiry::a_hand_over_holds_across_instances_on(&redis, "handover").await;
    crate::handoff::expiry::with_two_instances_a_quiet_hand_over_is_ended_once_on(&redis, "quiet")
        .await;
    crate::rich::more::a_menu_sent_by_one_instance_is_answered_on_another_on(&redis, "menus").await;
}

/// One cluster for the scenarios of owed work and limits, each under a prefix of its
/// own (run on a single server in `shared_state`): an instance stopped with SIGTERM
/// mid-turn leaves its owed replies to the other, sent once; a conversation's pace and
/// the agent budget are counted across both instances.
#[tokio::test]
async fn owed_work_at_sigterm_and_limits_hold_across_instances() {
    let redis = RedisCluster::start().await;
    crate::shared_state::at_sigterm_owed_replies_go_to_the_other_instance(&redis, "sigterm").await;
    crate::shared_state::the_rate_limit_holds_across_instances_on(&redis, "rate").await;
    crate::shared_state::the_agent_budget_holds_across_instances_on(&redis, "budget").await;
}

#[tokio::test]
async fn conversations_and_buckets_land_on_every_master() {
    let on = on_cluster("twiml", &[]).await;
    for n in 0..24 {
        let instance = &on.instances[n % 2];
        let message = says("hi", &sid("SM", 0xc4_0000 + n as u128));
        match user_phone(instance, n).send(&message).await.unwrap() {
            PhoneReply::Messages(replies) => {
                assert_eq!(texts(&replies), vec!["Hello from the agent"]);
            }
            refused => panic!("{refused:?}"),
        }
    }
    // Every master holds conversations, and buckets of the sweepers' lists: the load
    // is spread, not all on one slot by accident.
    for pattern in ["*:c", "*:leases"] {
        let by_master = on.redis.keys_by_master(pattern).await;
        assert_eq!(by_master.len(), 3, "{by_master:?}");
        assert!(
            by_master.iter().all(|(_, keys)| !keys.is_empty()),
            "{pattern}: {by_master:?}"
        );
    }
    // Answered through the store, not each instance's own state.
    assert_eq!(asked(&on.local.emulator).len(), 24);
    let metrics = metrics_at(&on.instances[0].phone.url).await;
    assert_eq!(
        series_value(&metrics, "twilio_dialogflow_state_fallbacks_total"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_master_that_fails_during_traffic_loses_and_doubles_no_reply() {
    const USERS: usize = 6;
    const SLOW_USER: usize = 99;
    let mut on = on_cluster("api", &[("STATE_LEASE", "10s")]).await;
    let OnCluster {
        redis,
        instances,
        local,
    } = &mut on;
    let failed_over = std::cell::Cell::new(false);
    // Each user writes a message in each round, to one instance and then the other,
    // until two rounds after the failover: a round takes more than 300 ms and a
    // failover more than the second a node takes to notice, so rounds run while the
    // master is down.
    let traffic = async {
        let mut rounds = 0;
        let mut after = 0;
        while after < 2 {
            after += usize::from(failed_over.get());
            for user in 0..USERS {
                let instance = &instances[(user + rounds) % 2];
                let message = says(
                    "hi",
                    &sid("SM", (0xc5 << 16) + (user * 100 + rounds) as u128),
                );
                match user_phone(instance, user).send(&message).await.unwrap() {
                    PhoneReply::Messages(_) => {}
                    refused => panic!("{refused:?}"),
                }
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        rounds
    };
    // Once every user has begun, one more asks a slow question, and the master holding
    // that conversation fails while the agent answers: the turn ends (the reply sent)
    // while its master is down, and its replica takes over while the users go on.
    let failure = async {
        agent_asked(&local.emulator, 2 * USERS).await;
        let slow = user_phone(&instances[0], SLOW_USER);
        let message = says("a bit slow", &sid("SM", 0xc5_ffff));
        assert!(matches!(
            slow.send(&message).await.unwrap(),
            PhoneReply::Messages(_)
        ));
        eventually("the agent asked", Duration::from_secs(10), || async {
            ready_if(asked(&local.emulator), |asked| {
                asked.iter().any(|text| text == "a bit slow")
            })
        })
        .await;
        let session = session_of(SLOW_USER);
        let by_master = redis.keys_by_master("*:c").await;
        let (master, _) = by_master
            .iter()
            .find(|(_, keys)| keys.iter().any(|key| key.contains(session.as_str())))
            .unwrap();
        redis.kill(*master);
        redis.settled().await;
        failed_over.set(true);
    };
    let (rounds, ()) = tokio::join!(traffic, failure);
    assert_eq!(redis.masters().await.len(), 3);
    // Every message answered exactly once: none lost, none doubled.
    local.twilio.wait_for(USERS * rounds + 1).await;
    turns_finished(redis).await;
    quiet_window(Duration::from_millis(500)).await;
    let sent = local.twilio.sent();
    for n in 0..USERS {
        let to = user(n);
        let count = sent.iter().filter(|m| m.to == to).count();
        assert_eq!(count, rounds, "{to}: {sent:#?}");
    }
    let slow_replies: Vec<&str> = sent
        .iter()
        .filter(|m| m.to == user(SLOW_USER))
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(slow_replies, vec!["Slowly but surely"]);
    assert_eq!(sent.len(), USERS * rounds + 1);
}
