//! `--simulate` and `rdp-doctor simulate`: the built-in Azure simulator with the demo world.

use crate::sim::{SimOptions, Simulator, World};

/// Tenant and client ids the in-process simulator is signed into (it accepts any).
pub const DEMO_TENANT: &str = "00000000-0000-0000-0000-000000000001";
pub const DEMO_CLIENT: &str = "00000000-0000-0000-0000-000000000002";

/// Azure's behaviour, with Run Command taking a few seconds instead of Azure's tens (a demo
/// should not keep its audience waiting).
fn demo_options() -> SimOptions {
    SimOptions {
        run_command_delay: DEMO_RUN_COMMAND,
        ..SimOptions::default()
    }
}

/// How long a Run Command takes in the demo.
pub const DEMO_RUN_COMMAND: std::time::Duration = std::time::Duration::from_secs(3);

/// A simulator serving the demo world on an ephemeral loopback port.
pub struct Demo {
    pub sim: Simulator,
    pub world: World,
}

impl Demo {
    pub async fn start() -> anyhow::Result<Demo> {
        let world = crate::sim::demo_world();
        let sim = Simulator::start("127.0.0.1:0", world.clone(), demo_options()).await?;
        Ok(Demo { sim, world })
    }

    pub fn endpoint(&self) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse(&self.sim.url())?)
    }

    pub fn client_secret(&self) -> secrecy::SecretString {
        self.world.client_secret.clone().into()
    }

    pub fn subscription_ids(&self) -> Vec<String> {
        self.world
            .subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }
}

/// `rdp-doctor simulate` without `--world`: the demo world until Ctrl-C.
pub async fn serve_demo(listen: &str) -> anyhow::Result<()> {
    let options = SimOptions {
        retry_after_secs: 1,
        ..demo_options()
    };
    let sim = Simulator::start(listen, crate::sim::demo_world(), options).await?;
    println!("simulator listening on {} (demo world)", sim.url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
