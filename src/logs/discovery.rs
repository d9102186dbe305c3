//! Logstash's instances from Consul: the passing instances of the configured
//! service, asked for at once and then every refresh interval, through the
//! `consul` hook's client, address and token. An empty or failed answer keeps
//! the last known list (a Consul hiccup must not stop shipping).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::{info, warn};

use super::ConsulAccess;
use crate::hooks::consul;

/// Polls Consul until aborted, keeping `list` current.
pub(crate) async fn run(
    access: ConsulAccess,
    service: String,
    refresh: Duration,
    list: Arc<Mutex<Vec<String>>>,
) {
    let mut failing = false;
    loop {
        match consul::passing_instances(
            &access.base_url,
            access.token.as_ref(),
            &service,
            access.timeout,
        )
        .await
        {
            Ok(mut found) if !found.is_empty() => {
                found.sort();
                failing = false;
                if let Ok(mut current) = list.lock() {
                    if *current != found {
                        info!(service = %service, instances = ?found, "Logstash instances from Consul");
                        *current = found;
                    }
                }
            }
            Ok(_) => {
                if !failing {
                    warn!(service = %service, "Consul knows no passing Logstash instance; keeping the last known ones");
                    failing = true;
                }
            }
            Err(e) => {
                if !failing {
                    warn!(service = %service, cause = %e, "asking Consul for Logstash instances failed; keeping the last known ones");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(refresh).await;
    }
}
