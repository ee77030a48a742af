//! Micro-benchmarks of the pure steps of a webhook: signature validation, form
//! parsing, route lookup, reply shaping and TwiML rendering.
//!
//!     cargo bench --bench micro

use bridge::reply::{fit_to_limits, ReplyMessage};
use bridge::twilio::signature;
use bridge::twilio::twiml;
use bridge::twilio::webhook::{FormParams, IncomingMessage};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const URL: &str = "https://bridge-abc123-uc.a.run.app/";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// A realistic WhatsApp webhook body, as Twilio sends it.
fn body() -> String {
    let pairs = [
        ("SmsMessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("NumMedia", "1"),
        ("ProfileName", "Ada"),
        ("MessageType", "image"),
        ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
        ("WaId", "15551234567"),
        ("SmsStatus", "received"),
        (
            "Body",
            "Hello, I'd like a large pepperoni pizza & a drink please",
        ),
        ("To", "whatsapp:+14155238886"),
        ("MediaContentType0", "image/jpeg"),
        ("NumSegments", "1"),
        ("ReferralNumMedia", "0"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("AccountSid", ACCOUNT),
        ("From", "whatsapp:+15551234567"),
        (
            "MediaUrl0",
            "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME",
        ),
        ("ApiVersion", "2010-04-01"),
    ];
    FormParams::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .encode()
}

fn benches(c: &mut Criterion) {
    let body = body();
    let params = FormParams::parse(body.as_bytes());
    let valid = signature::compute(TOKEN, URL, params.pairs());

    c.bench_function("form parse (17 parameters)", |b| {
        b.iter(|| FormParams::parse(black_box(body.as_bytes())))
    });
    c.bench_function("signature validation", |b| {
        b.iter(|| {
            signature::is_valid(
                black_box(&[TOKEN]),
                black_box(URL),
                black_box(params.pairs()),
                black_box(&valid),
            )
        })
    });
    c.bench_function("message read from verified form", |b| {
        b.iter(|| IncomingMessage::from_verified(black_box(params.clone()), ACCOUNT))
    });
    let replies = vec![
        ReplyMessage::text(
            "A large pepperoni pizza, coming up! Anything to drink? 🍕 <fresh> & hot",
        ),
        ReplyMessage {
            body: "Our menu".into(),
            media: vec!["https://example.com/menu.jpg".into()],
            ..ReplyMessage::default()
        },
    ];
    c.bench_function("reply shaping and TwiML rendering (2 messages)", |b| {
        b.iter(|| twiml::render(&fit_to_limits(black_box(replies.clone()))))
    });
    let long = vec![ReplyMessage::text("pizza ".repeat(700))];
    c.bench_function("split and render a 4200-character reply", |b| {
        b.iter(|| twiml::render(&fit_to_limits(black_box(long.clone()))))
    });
}

/// A thousand routes, one per number (half of them also by Messaging Service), and the
/// lookup of a webhook for the last of them: the index makes it as cheap as the first.
fn routing(c: &mut Criterion) {
    use bridge::routes::{Addressed, Index, Matcher};
    let matchers: Vec<Matcher> = (0..1000)
        .map(|i| Matcher {
            to: Some(format!("+331700{i:05}")),
            messaging_service_sid: (i % 2 == 0).then(|| format!("MG{i:032x}")),
            account_sid: None,
        })
        .chain(std::iter::once(Matcher::default()))
        .collect();
    let index = Index::new(matchers);
    let webhook = Addressed {
        to: "whatsapp:+33170000999",
        messaging_service_sid: None,
        account_sid: ACCOUNT,
    };
    c.bench_function("route lookup among 1000 routes", |b| {
        b.iter(|| index.find(black_box(&webhook)))
    });
    let unrouted = Addressed {
        to: "+15550000000",
        ..webhook
    };
    c.bench_function(
        "route lookup among 1000 routes, falling to the default",
        |b| b.iter(|| index.find(black_box(&unrouted))),
    );
}

criterion_group!(micro, benches, routing);
criterion_main!(micro);
