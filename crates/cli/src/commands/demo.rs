//! `crmhub demo`: crmhub on a fresh SQLite database with everything it needs to show each
//! channel working, no setup and no network.

use std::net::SocketAddr;
use std::path::PathBuf;

use crmhub_server::{Application, Settings};

use super::serve::wait_for_signal;

pub async fn run(listen: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (data_dir, _temp) = match data_dir {
        Some(dir) => (dir, None),
        None => {
            let temp = tempfile::Builder::new().prefix("crmhub-demo-").tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let mut settings = Settings::defaults()?;
    settings.data_dir = data_dir.clone();
    settings.server.listen = listen.to_string();
    // The demo's simulators listen on loopback; a production configuration refuses it.
    settings.outbound.allow_private = vec!["127.0.0.1/32".into()];

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut app = Application::builder(settings).listener(listener).build().await?;
    let base = format!("http://{}", app.local_addr());
    println!("crmhub demo is running on {base} (data in {})", data_dir.display());
    if let Some(token) = app.take_generated_admin_token() {
        println!("Admin token: {}", token.expose());
        println!("  curl -H 'Authorization: Bearer {}' {base}/admin/v1/tenants", token.expose());
    }
    println!("Health: {base}/healthz  Ready: {base}/readyz  Metrics: {base}/metrics");
    println!("Press Ctrl-C to stop.");
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    app.run_until_stopped().await
}
