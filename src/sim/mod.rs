//! TEMPORARY stub until the simulator branch lands.
pub const DEMO_TENANT: &str = "t";
pub const DEMO_CLIENT: &str = "c";
pub struct Demo;
impl Demo {
    pub fn endpoint(&self) -> url::Url {
        todo!()
    }
    pub fn client_secret(&self) -> secrecy::SecretString {
        todo!()
    }
    pub fn subscription_ids(&self) -> Vec<String> {
        todo!()
    }
}
pub async fn start_demo() -> anyhow::Result<Demo> {
    todo!()
}
pub async fn run_demo(_l: &str) -> anyhow::Result<()> {
    todo!()
}
pub async fn run_standalone(_l: &str, _p: &std::path::Path) -> anyhow::Result<()> {
    todo!()
}
