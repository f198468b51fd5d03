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
    let mut app = Application::build(settings).await?;
    if let Some(token) = app.take_generated_admin_token() {
        print_admin_token_once(token.expose());
    }
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
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

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
