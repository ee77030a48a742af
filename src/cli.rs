//! The command line: `serve`, `emulator`, `chat`, `phone`, `desk`, `check`, `demo` and `send`.
//!
//! Every command reads the process environment over a `.env` file in the working
//! directory, so that one `.env` configures the bridge, the local emulators and the
//! terminal phone alike.

use crate::{check, send};
use anyhow::Context;
use bridge::config::{self, ProjectLookup, Vars};
use bridge::{logging, startup, telemetry};
use clap::{Parser, Subcommand};
use stand_ins::{chat, demo, desk, emulator, phone};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "twilio-dialogflow",
    version,
    about = "Bridge Twilio Messaging (SMS, MMS, WhatsApp) to a Dialogflow CX or ES agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: configured by the environment and a .env file (see README).
    Serve,
    /// Run a local Dialogflow emulator, and with --twilio-port a local Messages API.
    Emulator {
        /// The agent file (YAML or JSON; see docs/agent-file.md). Without it, the
        /// sample pizza agent built into the command.
        #[arg(long)]
        agent: Option<PathBuf>,
        #[arg(long, default_value_t = 8085)]
        port: u16,
        /// Also run a stand-in for Twilio's Messages API on this port, for
        /// REPLY_MODE=api/auto (point TWILIO_API_BASE_URL at it). It accepts the
        /// TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN of the environment or .env.
        #[arg(long)]
        twilio_port: Option<u16>,
    },
    /// A terminal phone: each line typed is sent to a bridge as a signed Twilio webhook.
    Chat {
        /// The bridge's webhook URL, exactly as configured in Twilio [default:
        /// TWILIO_WEBHOOK_URL, else http://127.0.0.1:$PORT/]
        #[arg(long)]
        url: Option<String>,
        /// The sender: a phone number, or whatsapp:+number.
        #[arg(long, default_value = "+15555550100")]
        from: String,
        /// The number written to.
        #[arg(long, default_value = "+15555550199")]
        to: String,
        /// Be a WhatsApp sender: `whatsapp:` before both numbers, and buttons and lists
        /// to tap (`/tap 2`).
        #[arg(long)]
        whatsapp: bool,
        /// Send this one picture (MMS) with the first message.
        #[arg(long)]
        media: Option<String>,
        /// Where replies sent through the Messages API can be read back (a local
        /// stand-in, see `emulator --twilio-port`) [default: TWILIO_API_BASE_URL]
        #[arg(long)]
        api_url: Option<String>,
        /// [default: TWILIO_ACCOUNT_SID]
        #[arg(long)]
        account_sid: Option<String>,
        /// [default: TWILIO_AUTH_TOKEN]
        #[arg(long)]
        auth_token: Option<String>,
    },
    /// A phone in the browser: a local page with SMS and WhatsApp phones (buttons,
    /// lists, pictures, locations) and a helpdesk pane, sending signed webhooks.
    Phone {
        /// Where the page is served; loopback unless asked otherwise.
        #[arg(long, default_value = "127.0.0.1:8070")]
        listen: std::net::SocketAddr,
        /// The bridge's webhook URL, exactly as configured in Twilio [default:
        /// TWILIO_WEBHOOK_URL, else http://127.0.0.1:$PORT/]
        #[arg(long)]
        url: Option<String>,
        /// The number the phones write to.
        #[arg(long, default_value = "+15555550199")]
        to: String,
        /// Where replies sent through the Messages API can be read back [default:
        /// TWILIO_API_BASE_URL]
        #[arg(long)]
        api_url: Option<String>,
        /// [default: TWILIO_ACCOUNT_SID]
        #[arg(long)]
        account_sid: Option<String>,
        /// [default: TWILIO_AUTH_TOKEN]
        #[arg(long)]
        auth_token: Option<String>,
        /// Also be the helpdesk: receive hand-over events on this port (point
        /// HANDOFF_URL at it; HANDOFF_SECRET and HANDOFF_TOKEN as for `desk`).
        #[arg(long)]
        desk_port: Option<u16>,
        /// The bridge's base URL, for the hand-over API [default: http://127.0.0.1:$PORT]
        #[arg(long)]
        bridge: Option<String>,
    },
    /// A terminal helpdesk for hand-over: prints the bridge's signed events and sends
    /// what is typed back through the bridge's hand-over API.
    Desk {
        /// The port events are received on (point HANDOFF_URL at it).
        #[arg(long, default_value_t = 8090)]
        listen: u16,
        /// The bridge's base URL [default: http://127.0.0.1:$PORT]
        #[arg(long)]
        bridge: Option<String>,
        /// [default: HANDOFF_TOKEN]
        #[arg(long)]
        token: Option<String>,
        /// [default: HANDOFF_SECRET]
        #[arg(long)]
        secret: Option<String>,
    },
    /// Check the configuration as `serve` reads it, and ask the agent one question.
    Check {
        /// Only check the configuration; do not call the agent.
        #[arg(long)]
        offline: bool,
        /// What to ask the agent.
        #[arg(long, default_value = "hello")]
        text: String,
        /// Ask the agent of every route, not only the default route's.
        #[arg(long)]
        all_routes: bool,
    },
    /// Start an emulated agent and the bridge, and play a conversation through them.
    Demo {
        /// Drop into the terminal phone after the scripted conversation.
        #[arg(long, conflicts_with = "web")]
        interactive: bool,
        /// Instead of the script, open the phone in the browser: prints the page's
        /// address (a line starting `open http://`) and runs until Ctrl-C.
        #[arg(long)]
        web: bool,
        /// The page's port with --web (on 127.0.0.1; 0 picks a free one).
        #[arg(long, default_value_t = 8070, requires = "web")]
        web_port: u16,
    },
    /// Send a message the business starts to each person of a CSV, through a running
    /// bridge's POST /outbound (token: OUTBOUND_TOKEN). A batch run twice sends once.
    Send {
        /// The people: a column `to` (+E164 or whatsapp:+E164), an optional `from`,
        /// and the event's parameters or the template's variables as other columns.
        #[arg(long)]
        csv: PathBuf,
        /// Ask the agent with this event in each person's session; the columns are
        /// its parameters.
        #[arg(long, group = "message")]
        event: Option<String>,
        /// Send this approved template (HX…); the columns are its variables.
        #[arg(long, group = "message")]
        template: Option<String>,
        /// Send this text as is.
        #[arg(long, group = "message")]
        text: Option<String>,
        /// The bridge's base URL [default: beside TWILIO_WEBHOOK_URL, else
        /// http://127.0.0.1:$PORT]
        #[arg(long)]
        url: Option<String>,
        /// The CSV of results [default: NAME.results.csv beside the CSV]
        #[arg(long)]
        results: Option<PathBuf>,
        /// How many rows are in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Check the CSV and print what would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Erase a person: everything a running bridge keeps about them, through its
    /// POST /privacy/erase (token: PRIVACY_TOKEN); prints what was removed. Their
    /// opt-out is kept, as a keyed hash.
    Erase {
        /// The person: +E164 (SMS and WhatsApp) or whatsapp:+E164.
        person: String,
        /// Only their conversations with this sender of ours (+E164, whatsapp:+E164
        /// or a Messaging Service SID) [default: every sender and account].
        #[arg(long)]
        sender: Option<String>,
        /// The bridge's base URL [default: beside TWILIO_WEBHOOK_URL, else
        /// http://127.0.0.1:$PORT]
        #[arg(long)]
        url: Option<String>,
    },
}

/// Runs the command line; what the binary's `main` does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut vars = match std::env::current_dir()
        .map_err(|e| format!("cannot read the working directory: {e}"))
        .and_then(|dir| config::load_vars(&dir))
    {
        Ok(vars) => vars,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Before logging starts, whose Cloud Logging entries name the project.
    let project = match cli.command {
        Command::Serve | Command::Check { .. } => {
            runtime.block_on(config::complete_project(&mut vars))
        }
        _ => ProjectLookup::Configured,
    };
    // The demo, the phone and the check print for people; only errors interrupt them.
    let quiet = !matches!(cli.command, Command::Serve | Command::Emulator { .. });
    let serving = matches!(cli.command, Command::Serve);
    // Cloud Logging files a request's lines, and Cloud Trace its spans, under the
    // project the bridge runs in: asked of the metadata server only when the lines
    // are for Cloud Logging or the spans for Google's endpoint.
    let export = serving.then(|| config::trace_export(&vars)).flatten();
    let for_google = logging::LogFormat::from_vars(&vars) == logging::LogFormat::Json
        || export
            .as_ref()
            .is_some_and(|e| telemetry::export::is_google(&e.endpoint));
    let trace_project = match serving && for_google {
        true => runtime.block_on(telemetry::trace_project(&vars)),
        false => config::project_of(&vars).map(str::to_owned),
    };
    let traces = match export.map(|export| {
        let _runtime = runtime.enter();
        telemetry::Export::start(&export, trace_project.as_deref())
    }) {
        None => None,
        Some(Ok(traces)) => Some(traces),
        Some(Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    logging::init_with(
        &vars,
        if quiet { "error" } else { "info" },
        trace_project,
        traces.as_ref(),
    );
    let code = match runtime.block_on(run(cli.command, vars, project)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // After the last request's work: the spans not yet sent go now.
    if let Some(traces) = traces {
        runtime.block_on(traces.flusher().flush());
    }
    code
}

async fn run(command: Command, vars: Vars, project: ProjectLookup) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(&vars, &project).await,
        Command::Emulator {
            agent,
            port,
            twilio_port,
        } => {
            let twilio = match twilio_port {
                Some(port) => Some(emulator::TwilioStandIn {
                    port,
                    account_sid: required(&vars, "TWILIO_ACCOUNT_SID", "--twilio-port")?,
                    auth_token: required(&vars, "TWILIO_AUTH_TOKEN", "--twilio-port")?,
                }),
                None => None,
            };
            emulator::run(agent.as_deref(), port, twilio).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat {
            url,
            from,
            to,
            whatsapp,
            media,
            api_url,
            account_sid,
            auth_token,
        } => {
            let url = url
                .or_else(|| var(&vars, "TWILIO_WEBHOOK_URL"))
                .unwrap_or_else(|| format!("{}/", local_bridge(&vars)));
            let account_sid = given_or(account_sid, &vars, "TWILIO_ACCOUNT_SID", "chat")?;
            let auth_token = given_or(auth_token, &vars, "TWILIO_AUTH_TOKEN", "chat")?;
            let (from, to) = match whatsapp {
                true => (chat::whatsapp(&from), chat::whatsapp(&to)),
                false => (from, to),
            };
            let phone = chat::Phone::new(&url, &account_sid, &auth_token, &from, &to)?;
            let inbox = api_url
                .or_else(|| var(&vars, "TWILIO_API_BASE_URL"))
                .map(|base| chat::ApiInbox::new(&base, &account_sid, &auth_token, &from))
                .transpose()?;
            let mut session = chat::Session::new(phone, inbox);
            if let Some(media) = media {
                session
                    .send(&chat::Outgoing {
                        media: vec![media],
                        ..Default::default()
                    })
                    .await?;
            }
            let prompt = std::io::IsTerminal::is_terminal(&std::io::stdin());
            session.run(prompt).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Desk {
            listen,
            bridge,
            token,
            secret,
        } => {
            let bridge = bridge.unwrap_or_else(|| local_bridge(&vars));
            let token = given_or(token, &vars, "HANDOFF_TOKEN", "desk")?;
            let secret = given_or(secret, &vars, "HANDOFF_SECRET", "desk")?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen))
                .await
                .with_context(|| format!("cannot listen on port {listen}"))?;
            desk::run(listener, &secret, desk::HumanSide::new(&bridge, &token)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            offline,
            text,
            all_routes,
        } => {
            let (verdict, report) = check::run(&vars, &project, offline, all_routes, &text).await;
            print!("{report}");
            Ok(ExitCode::from(verdict as u8))
        }
        Command::Demo {
            web: true,
            web_port,
            ..
        } => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", web_port))
                .await
                .with_context(|| format!("cannot listen on port {web_port}"))?;
            demo::run_web(listener).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { interactive, .. } => {
            demo::run(interactive).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            csv,
            event,
            template,
            text,
            url,
            results,
            concurrency,
            dry_run,
        } => {
            let bridge = url.unwrap_or_else(|| bridge_beside_webhook(&vars));
            send::run(send::Options {
                csv,
                message: send::Message::parse(event, template, text)?,
                outbound_url: format!("{}/outbound", bridge.trim_end_matches('/')),
                token: var(&vars, "OUTBOUND_TOKEN"),
                results,
                concurrency,
                dry_run,
            })
            .await
        }
        Command::Erase {
            person,
            sender,
            url,
        } => {
            let bridge = url.unwrap_or_else(|| bridge_beside_webhook(&vars));
            crate::erase::run(crate::erase::Options {
                person,
                sender,
                erase_url: format!("{}/privacy/erase", bridge.trim_end_matches('/')),
                token: var(&vars, "PRIVACY_TOKEN"),
            })
            .await
        }
        Command::Phone {
            listen,
            url,
            to,
            api_url,
            account_sid,
            auth_token,
            desk_port,
            bridge,
        } => {
            let wiring = phone::Wiring {
                webhook_url: url
                    .or_else(|| var(&vars, "TWILIO_WEBHOOK_URL"))
                    .unwrap_or_else(|| format!("{}/", local_bridge(&vars))),
                account_sid: given_or(account_sid, &vars, "TWILIO_ACCOUNT_SID", "phone")?,
                auth_token: given_or(auth_token, &vars, "TWILIO_AUTH_TOKEN", "phone")?,
                our_number: to,
                api_url: api_url.or_else(|| var(&vars, "TWILIO_API_BASE_URL")),
            };
            let desk = match desk_port {
                Some(port) => Some(phone::DeskWiring {
                    listener: tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .with_context(|| format!("cannot listen on port {port}"))?,
                    secret: required(&vars, "HANDOFF_SECRET", "--desk-port")?,
                    human: desk::HumanSide::new(
                        &bridge.unwrap_or_else(|| local_bridge(&vars)),
                        &required(&vars, "HANDOFF_TOKEN", "--desk-port")?,
                    )?,
                }),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let web = phone::WebPhone::start(listener, wiring, desk)?;
            web.add_phone(phone::Channel::Sms)?;
            web.add_phone(phone::Channel::Whatsapp)?;
            println!("open {}", web.url());
            tokio::select! {
                served = web.wait() => served?,
                _ = startup::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(vars: &Vars, project: &ProjectLookup) -> anyhow::Result<ExitCode> {
    let settings = match config::load(vars, project) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors.0 {
                eprintln!("configuration error: {error}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    // The port first: a webhook that arrives while the bridge is set up waits in the
    // listen queue for the moment it serves, instead of being refused; and a port taken
    // is told before anything slow.
    let listener = startup::listen(std::net::SocketAddr::from(([0, 0, 0, 0], settings.port)))
        .with_context(|| format!("cannot listen on port {}", settings.port))?;
    let port = listener
        .local_addr()
        .map_or(settings.port, |addr| addr.port());
    let metrics = startup::metrics_listener(&settings, [0, 0, 0, 0].into()).with_context(|| {
        format!(
            "cannot listen on METRICS_PORT {}",
            settings.metrics.port.unwrap_or_default()
        )
    })?;
    let metrics_port = metrics
        .as_ref()
        .and_then(|listener| listener.local_addr().ok())
        .map(|addr| addr.port());
    let (state, clients) = startup::build(&settings)
        .await
        .context("cannot set up the bridge")?;
    let default = settings.default_route();
    // Listening for SIGTERM before saying the bridge listens: one sent at once must
    // find the handler.
    let stop = startup::shutdown_signal();
    tracing::info!(
        port,
        agent = default.map(|route| route.agent.to_string()),
        endpoint = default.map(|route| route.agent.endpoint.url()),
        routes = settings.routes.len(),
        reply_mode = %settings.replies.mode,
        metrics_port,
        max_connections = %settings.connection_cap,
        "bridge listening"
    );
    // Serving while the agents' clients are made: a client that cannot be made (no
    // credentials, say) stops the bridge, as it did when it was made before serving.
    let server = startup::serve(listener, metrics, state, stop);
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => served.context("the server failed")?,
        made = clients.made() => {
            made.context("cannot set up the Dialogflow client")?;
            server.await.context("the server failed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A variable that is set and not blank.
fn var(vars: &Vars, name: &str) -> Option<String> {
    vars.get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn required(vars: &Vars, name: &str, needed_by: &str) -> anyhow::Result<String> {
    var(vars, name).with_context(|| {
        format!("{name} is not set (in the environment or .env); {needed_by} needs it")
    })
}

/// The value given on the command line, else the variable `name`, which `needed_by`
/// then requires.
fn given_or(
    given: Option<String>,
    vars: &Vars,
    name: &str,
    needed_by: &str,
) -> anyhow::Result<String> {
    match given {
        Some(value) => Ok(value),
        None => required(vars, name, needed_by),
    }
}

/// The bridge the phone writes to, without a trailing slash: where
/// `TWILIO_WEBHOOK_URL` is, its path's last segment and query dropped (the bridge
/// serves its other routes beside the webhook), else [`local_bridge`].
fn bridge_beside_webhook(vars: &Vars) -> String {
    match var(vars, "TWILIO_WEBHOOK_URL") {
        Some(webhook) => {
            let without_query = webhook.split(['?', '#']).next().unwrap_or_default();
            let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
            match without_query[scheme_end..].rfind('/') {
                Some(slash) => without_query[..scheme_end + slash].to_owned(),
                None => without_query.to_owned(),
            }
        }
        None => local_bridge(vars),
    }
}

/// The bridge on this machine, at `PORT` (8080 by default), without a trailing slash.
fn local_bridge(vars: &Vars) -> String {
    let port = var(vars, "PORT").unwrap_or_else(|| "8080".into());
    format!("http://127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_is_beside_its_webhook() {
        let beside = |webhook: &str| {
            let vars: Vars = [("TWILIO_WEBHOOK_URL".to_string(), webhook.to_string())]
                .into_iter()
                .collect();
            bridge_beside_webhook(&vars)
        };
        assert_eq!(beside("https://h.example/"), "https://h.example");
        assert_eq!(beside("https://h.example/twilio"), "https://h.example");
        assert_eq!(
            beside("https://h.example/bot/in?a=1"),
            "https://h.example/bot"
        );
        assert_eq!(beside("https://h.example"), "https://h.example");
        let local: Vars = [("PORT".to_string(), "9000".to_string())]
            .into_iter()
            .collect();
        assert_eq!(bridge_beside_webhook(&local), "http://127.0.0.1:9000");
    }
}
