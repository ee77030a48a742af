//! The `twilio-dialogflow` command: a thin layer over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use twilio_dialogflow::{chat, check, config, demo, emulator, http, logging};

// glibc's allocator spent a third of the bridge's CPU on the per-request buffers of
// hyper and reqwest (malloc_consolidate on every 8 KiB read buffer); jemalloc's
// thread caches do not. See README, Benchmarks.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
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
    /// Run a local Dialogflow emulator that answers from an agent file.
    Emulator {
        /// The agent file (YAML or JSON); see docs/agent-file.md.
        #[arg(long, default_value = "examples/agents/pizza.yaml")]
        agent: PathBuf,
        #[arg(long, default_value_t = 8085)]
        port: u16,
    },
    /// A terminal phone: each line typed is sent to a bridge as a signed Twilio webhook.
    Chat {
        /// The bridge's webhook URL, exactly as configured in Twilio.
        #[arg(
            long,
            env = "TWILIO_WEBHOOK_URL",
            default_value = "http://127.0.0.1:8080/"
        )]
        url: String,
        /// The sender: a phone number, or whatsapp:+number.
        #[arg(long, default_value = "+15555550100")]
        from: String,
        /// The number written to.
        #[arg(long, default_value = "+15555550199")]
        to: String,
        /// Send this one picture (MMS) with the first message.
        #[arg(long)]
        media: Option<String>,
        #[arg(long, env = "TWILIO_ACCOUNT_SID", hide_env_values = true)]
        account_sid: String,
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
    },
    /// Check the configuration as `serve` reads it, and ask the agent one question.
    Check {
        /// Only check the configuration; do not call the agent.
        #[arg(long)]
        offline: bool,
        /// What to ask the agent.
        #[arg(long, default_value = "hello")]
        text: String,
    },
    /// Start an emulated agent and the bridge, and play a conversation through them.
    Demo {
        /// Drop into the terminal phone after the scripted conversation.
        #[arg(long)]
        interactive: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the phone print a conversation; only errors should interrupt it.
    let quiet = matches!(
        cli.command,
        Command::Demo { .. } | Command::Chat { .. } | Command::Check { .. }
    );
    // `serve` and `check` read `.env` as well as the environment, for logging too.
    let reads_dotenv = matches!(cli.command, Command::Serve | Command::Check { .. });
    let vars = if reads_dotenv {
        match std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))
            .and_then(|dir| config::load_vars(&dir))
        {
            Ok(vars) => vars,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        std::env::vars().collect()
    };
    logging::init(&vars, if quiet { "error" } else { "info" });
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
    match runtime.block_on(run(cli.command, vars)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vars`: the environment, over `.env` for `serve` and `check`.
async fn run(command: Command, vars: config::Vars) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(&vars).await,
        Command::Emulator { agent, port } => {
            emulator::run(&agent, port).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat {
            url,
            from,
            to,
            media,
            account_sid,
            auth_token,
        } => {
            let phone = chat::Phone::new(&url, &account_sid, &auth_token, &from, &to)?;
            if let Some(media) = media {
                let reply = phone
                    .send(&chat::Outgoing {
                        media: vec![media],
                        ..Default::default()
                    })
                    .await?;
                println!("{}", chat::show(&reply));
            }
            chat::run(&phone, std::io::IsTerminal::is_terminal(&std::io::stdin())).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { offline, text } => {
            let (verdict, report) = check::run(&vars, offline, &text).await;
            print!("{report}");
            Ok(ExitCode::from(verdict as u8))
        }
        Command::Demo { interactive } => {
            demo::run(interactive).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(vars: &config::Vars) -> anyhow::Result<ExitCode> {
    let settings = match config::Settings::from_vars(vars) {
        Ok(settings) => settings,
        Err(errors) => {
            for line in &errors.0 {
                eprintln!("configuration error: {line}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let state = http::AppState::connect(&settings)
        .await
        .context("cannot set up the Dialogflow client")?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("cannot listen on port {}", settings.port))?;
    tracing::info!(port = settings.port, agent = ?settings.agent.kind, endpoint = %settings.agent.endpoint.url(), "bridge listening");
    http::serve(listener, state, http::shutdown_signal())
        .await
        .context("the server failed")?;
    Ok(ExitCode::SUCCESS)
}
