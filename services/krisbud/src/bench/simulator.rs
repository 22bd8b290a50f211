//! The provider the benchmark sends to: the test harness's simulators of the Sinch
//! and 46elks APIs, in this process, on a real HTTP listener.

use std::time::Instant;

use krisbud_channel_sms::ProviderKind;
use krisbud_kit::Secret;
use krisbud_sim::{ElksSimulator, SinchSimulator};
use tokio::sync::oneshot;

use super::BenchProvider;

const SINCH_PLAN: &str = "krisbudbench";
const SINCH_TOKEN: &str = "bench-sinch-token";
const ELKS_USER: &str = "ubench";
const ELKS_PASSWORD: &str = "bench-elks-password";

/// A running simulator of one provider.
pub enum Simulator {
    Sinch(SinchSimulator),
    Elks(ElksSimulator),
}

impl Simulator {
    /// Starts the simulator of `provider`; it keeps counts, not messages, so a
    /// million recipients cost it no memory.
    pub async fn start(provider: BenchProvider) -> Simulator {
        match provider {
            BenchProvider::Sinch => {
                let sim = SinchSimulator::start(SINCH_PLAN, SINCH_TOKEN).await;
                sim.set_recording(false);
                Simulator::Sinch(sim)
            }
            BenchProvider::Elks46 => {
                let sim = ElksSimulator::start(ELKS_USER, ELKS_PASSWORD).await;
                sim.set_recording(false);
                Simulator::Elks(sim)
            }
        }
    }

    /// Points the SMS channel at the simulator.
    pub fn configure(&self, sms: &mut krisbud_channel_sms::Config) {
        sms.secondary_provider = None;
        sms.callback_listen = None;
        sms.delivery_callback_url = None;
        match self {
            Simulator::Sinch(sim) => {
                sms.provider = ProviderKind::Sinch;
                sms.sinch_base_url = sim.base_url();
                sms.sinch_service_plan_id = SINCH_PLAN.into();
                sms.sinch_api_token = Secret::new(SINCH_TOKEN);
            }
            Simulator::Elks(sim) => {
                sms.provider = ProviderKind::Elks46;
                sms.elks_base_url = sim.base_url();
                sms.elks_username = ELKS_USER.into();
                sms.elks_password = Secret::new(ELKS_PASSWORD);
            }
        }
    }

    /// Recipients accepted so far.
    pub fn submitted(&self) -> u64 {
        match self {
            Simulator::Sinch(sim) => sim.submitted(),
            Simulator::Elks(sim) => sim.submitted(),
        }
    }

    /// Resolves with the arrival time of the first submission from now on whose
    /// text contains `needle`.
    pub fn notify_first(&self, needle: &str) -> oneshot::Receiver<Instant> {
        match self {
            Simulator::Sinch(sim) => sim.notify_first(needle),
            Simulator::Elks(sim) => sim.notify_first(needle),
        }
    }
}
