//! The Messages API stand-in, measured with Twilio's official Python library: what
//! the library reads from it must be what it reads from Twilio (see
//! tests/fidelity/twilio_client.py for each case).

use crate::helpers::{ACCOUNT_SID, AUTH_TOKEN};
use crate::python;
use stand_ins::messages_api::{Inbound, MessagesEmulator};

/// The library's version the stand-in is measured with; PyPI's `twilio`.
const TWILIO_PYTHON: &str = "twilio==9.13.0";

#[tokio::test]
async fn twilios_python_library_reads_the_stand_in_as_twilio() {
    let Some(python) = python::venv("twilio", &[TWILIO_PYTHON]).await else {
        return;
    };
    let twilio = MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ACCOUNT_SID,
        AUTH_TOKEN,
    )
    .unwrap();
    // What the script expects of the people and the account (see the script).
    twilio.person_wrote(&Inbound {
        from: "+15551230099".into(),
        to: "+15557770000".into(),
        messaging_service_sid: None,
        body: "STOP".into(),
    });
    twilio.keep_session_windows();
    twilio.person_wrote(&Inbound {
        from: "whatsapp:+15551230002".into(),
        to: "whatsapp:+14155238886".into(),
        messaging_service_sid: None,
        body: "hello".into(),
    });
    twilio.register_template(
        &format!("HX{}1", "0".repeat(31)),
        "Your table is booked for {{1}}.",
    );
    let mut command = std::process::Command::new(python);
    command.arg(python::script("twilio_client.py")).args([
        &twilio.base_url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
    ]);
    let output = python::run(command).await;
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
