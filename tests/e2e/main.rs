//! End-to-end tests: the real `tapwatch` binary against real captures, real tools
//! (tcpdump, tshark) and real interfaces (veth pairs in namespaces the tests create).

mod common;
mod console;
mod durability;
mod engine;
mod evidence;
mod flow_health;
mod latency;
mod live_capture;
mod live_detect;
mod live_replay;
mod replay_cli;
mod replay_signals;
mod restore;
mod scenarios;
mod settings;
mod setups;
mod sflow;
mod shared_pcaps;
mod soak;
mod storage;
mod webhooks;
