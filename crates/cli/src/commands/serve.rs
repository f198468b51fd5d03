//! `crmhub serve`

use crmhub_server::config::Role;
use crmhub_server::{Application, Settings};

use crate::cli::RoleArg;

pub async fn run(mut settings: Settings, role: Option<RoleArg>) -> anyhow::Result<()> {
    if let Some(role) = role {
        settings.server.role = match role {
            RoleArg::Api => Role::Api,
            RoleArg::Worker => Role::Worker,
            RoleArg::Both => Role::Both,
        };
    }
    let signals = Signals::install();
    let mut app = Application::build(settings).await?;
    if let Some(token) = app.take_generated_admin_token() {
        print_admin_token_once(token.expose());
    }
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        signals.wait().await;
        shutdown.cancel();
    });
    app.run_until_stopped().await
}

/// Shown on standard output, never through the logger, so it does not end up in log files.
pub fn print_admin_token_once(token: &str) {
    println!("This installation's admin token (shown only this once; store it safely):");
    println!("  {token}");
    println!("Use it as `Authorization: Bearer <token>` on /admin/v1. Lost it? `crmhub admin-token reset`.");
}

/// Ctrl-C or SIGTERM, listened for from the moment `install` returns: a signal that arrives
/// while the application is still starting (its port already open) stops it cleanly instead
/// of killing it.
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    pub async fn wait(mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(self.interrupt.as_mut()) => {}
                () = next(self.terminate.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
